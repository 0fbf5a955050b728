//! How a usage rollup is stored. One is written per event, meter and grain, and at a thousand
//! customers nearly every minute row holds a single event, so the record is packed by hand
//! (`codec::Packer`): variable-length integers and decimals, and a one-event row keeps its value
//! once instead of as sum, min, max and latest. A bincode row written before 0.10.0 still reads.

use super::usage::Rollup;
use crate::decimal::Stored;
use crate::store::codec::{self, CodecError, Packer, Unpacker};

/// Flag: `min` is present.
const HAS_MIN: u8 = 1;
/// Flag: `max` is present.
const HAS_MAX: u8 = 1 << 1;
/// Flag: `latest` is present.
const HAS_LATEST: u8 = 1 << 2;
/// Flag: the row is one valued event: `latest` alone says everything (count 1, and its value
/// is the sum, the min and the max).
const ONE_VALUE: u8 = 1 << 3;
/// Flag: the sum is not zero (count meters never store it).
const HAS_SUM: u8 = 1 << 4;
/// Every flag this version knows; any other bit is a newer writer's.
const KNOWN: u8 = HAS_MIN | HAS_MAX | HAS_LATEST | ONE_VALUE | HAS_SUM;

/// The stored form of a rollup.
pub fn encode(r: &Rollup) -> Vec<u8> {
    let mut p = Packer::new();
    if let Some((ts, id, v)) = one_value(r) {
        p.byte(ONE_VALUE)
            .signed(i128::from(ts))
            .fixed16(id)
            .decimal(v.0);
        return p.finish();
    }
    let mut flags = 0;
    for (present, flag) in [
        (r.min.is_some(), HAS_MIN),
        (r.max.is_some(), HAS_MAX),
        (r.latest.is_some(), HAS_LATEST),
        (!r.sum.0.is_zero(), HAS_SUM),
    ] {
        if present {
            flags |= flag;
        }
    }
    p.byte(flags).unsigned(u128::from(r.count));
    if !r.sum.0.is_zero() {
        p.decimal(r.sum.0);
    }
    for d in [r.min, r.max].into_iter().flatten() {
        p.decimal(d.0);
    }
    if let Some((ts, id, v)) = r.latest {
        p.signed(i128::from(ts)).fixed16(id).decimal(v.0);
    }
    p.finish()
}

/// The latest event of a row that holds exactly that one valued event.
fn one_value(r: &Rollup) -> Option<(i64, u128, Stored)> {
    let (ts, id, v) = r.latest?;
    (r.count == 1 && r.sum == v && r.min == Some(v) && r.max == Some(v)).then_some((ts, id, v))
}

/// A stored rollup, packed or (written before 0.10.0) bincode.
pub fn decode(bytes: &[u8]) -> Result<Rollup, CodecError> {
    if !codec::is_packed(bytes) {
        return codec::decode(bytes);
    }
    let mut u = Unpacker::new(bytes)?;
    let flags = u.byte()?;
    if flags & !KNOWN != 0 {
        return Err(CodecError::Decode(format!(
            "unknown rollup flags {flags:#x}"
        )));
    }
    let latest = |u: &mut Unpacker<'_>| -> Result<(i64, u128, Stored), CodecError> {
        Ok((u.signed64()?, u.fixed16()?, Stored(u.decimal()?)))
    };
    let rollup = if flags == ONE_VALUE {
        let (ts, id, v) = latest(&mut u)?;
        Rollup {
            count: 1,
            sum: v,
            min: Some(v),
            max: Some(v),
            latest: Some((ts, id, v)),
        }
    } else if flags & ONE_VALUE != 0 {
        return Err(CodecError::Decode(format!("bad rollup flags {flags:#x}")));
    } else {
        let count = u.unsigned64()?;
        let mut decimal_if = |flag: u8| -> Result<Option<Stored>, CodecError> {
            (flags & flag != 0)
                .then(|| u.decimal().map(Stored))
                .transpose()
        };
        let sum = decimal_if(HAS_SUM)?.unwrap_or_default();
        let min = decimal_if(HAS_MIN)?;
        let max = decimal_if(HAS_MAX)?;
        let latest = (flags & HAS_LATEST != 0)
            .then(|| latest(&mut u))
            .transpose()?;
        Rollup {
            count,
            sum,
            min,
            max,
            latest,
        }
    };
    u.finish()?;
    Ok(rollup)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    fn decimal() -> impl Strategy<Value = Stored> {
        (any::<i64>(), 0u32..=12).prop_map(|(m, scale)| Stored(Decimal::new(m, scale)))
    }

    fn rollup() -> impl Strategy<Value = Rollup> {
        (
            any::<u64>(),
            decimal(),
            proptest::option::of(decimal()),
            proptest::option::of(decimal()),
            proptest::option::of((any::<i64>(), any::<u128>(), decimal())),
        )
            .prop_map(|(count, sum, min, max, latest)| Rollup {
                count,
                sum,
                min,
                max,
                latest,
            })
    }

    proptest! {
        #[test]
        fn every_rollup_round_trips(r in rollup()) {
            prop_assert_eq!(decode(&encode(&r)).expect("decodes"), r);
        }

        #[test]
        fn one_valued_events_round_trip(ts in any::<i64>(), id in any::<u128>(), v in decimal()) {
            let r = Rollup { count: 1, sum: v, min: Some(v), max: Some(v), latest: Some((ts, id, v)) };
            let bytes = encode(&r);
            prop_assert_eq!(bytes[1], ONE_VALUE);
            prop_assert_eq!(decode(&bytes).expect("decodes"), r);
        }
    }

    #[test]
    fn rows_written_before_still_read() {
        let v = Stored(Decimal::new(1234, 0));
        let r = Rollup {
            count: 3,
            sum: v,
            min: Some(v),
            max: None,
            latest: Some((1_750_000_000_000, 7, v)),
        };
        let bincode = codec::encode(&r).expect("encode");
        assert_eq!(decode(&bincode).expect("decodes"), r);
    }

    #[test]
    fn a_one_event_row_is_a_quarter_of_its_bincode_form() {
        let v = Stored(Decimal::new(3_517, 0));
        let one = Rollup {
            count: 1,
            sum: v,
            min: Some(v),
            max: Some(v),
            latest: Some((1_780_000_000_000, u128::MAX / 3, v)),
        };
        assert_eq!(encode(&one).len(), 27);
        assert!(encode(&one).len() * 3 < codec::encode(&one).expect("encode").len());
        let counted = Rollup {
            count: 1,
            ..Rollup::default()
        };
        assert_eq!(encode(&counted), vec![codec::PACKED_VERSION, 0, 1]);
    }

    #[test]
    fn garbled_rows_are_errors() {
        let good = encode(&Rollup {
            count: 2,
            sum: Stored(Decimal::ONE),
            ..Rollup::default()
        });
        for cut in 1..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut unknown = good.clone();
        unknown[1] |= 1 << 7;
        assert!(decode(&unknown).is_err());
        let mut mixed = good;
        mixed[1] |= ONE_VALUE;
        assert!(decode(&mixed).is_err());
        let mut trailing = encode(&Rollup::default());
        trailing.push(0);
        assert!(decode(&trailing).is_err());
    }
}
