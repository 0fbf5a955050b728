//! Commands on event destinations (create, update, rotate the secret) and on deliveries
//! (resend), plus the checks a destination URL must pass before anything is stored or sent.

use crate::store::ReadableTable;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::store::{ReadTxn, WriteTxn};

use super::destination::{self, Destination, DestinationStatus};
use super::outbox::{self, Delivery, DeliveryStatus};
use crate::id::Id;
use crate::jobs::{self, Job};
use crate::store::keys::{self, TenantId};
use crate::store::writer::Command;
use crate::store::{codec, get_record, put_record, tables, StoreError};

/// Longest destination URL.
pub const MAX_URL_CHARS: usize = 2048;
/// Most event types one destination may list.
pub const MAX_EVENT_TYPES: usize = 64;

/// Why a destination URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Not an absolute URL with a host.
    #[error("is not an absolute URL with a host")]
    Malformed,
    /// A scheme other than https (or http where allowed).
    #[error("must use https:// (http:// only with notifications.allow_http)")]
    Scheme,
    /// The host resolves to an address Tally does not call (the address is not named: it
    /// would map the operator's network).
    #[error("is not a public address: loopback, private, link-local, metadata and reserved addresses are allowed only with notifications.allow_private_targets")]
    Private(IpAddr),
    /// The host does not resolve.
    #[error("does not resolve: {0}")]
    Unresolved(String),
}

/// Checks a URL's form: absolute, with a host, `https` (or `http` when `allow_http`).
pub fn check_url(text: &str, allow_http: bool) -> Result<reqwest::Url, UrlError> {
    if text.chars().count() > MAX_URL_CHARS {
        return Err(UrlError::Malformed);
    }
    let url = reqwest::Url::parse(text).map_err(|_| UrlError::Malformed)?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        _ => return Err(UrlError::Scheme),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::Malformed);
    }
    Ok(url)
}

/// Whether an address is one a tenant's destination must not reach: loopback, private,
/// shared (100.64/10), link-local (the cloud metadata address 169.254.169.254 included),
/// unique-local, unspecified, broadcast or multicast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let seg = v6.segments();
            let first = seg[0];
            // IPv4 embedded by translation or tunnelling reaches the IPv4 it carries.
            let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
            let nat64 = (seg[0], seg[1]) == (0x64, 0xff9b);
            let compatible = seg[..6].iter().all(|s| *s == 0);
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                || first == 0x2002
                || (first, seg[1]) == (0x2001, 0)
                || (nat64 && is_private_v4(embedded(seg[6], seg[7])))
                || (compatible && is_private_v4(embedded(seg[6], seg[7])))
                || (first & 0xe000) != 0x2000
                || v6 == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

fn is_private_v4(v4: Ipv4Addr) -> bool {
    let [a, b, ..] = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && v4.octets()[2] == 0)
        || (a == 198 && (18..20).contains(&b))
}

/// Resolves the URL's host and refuses it when any address is private (see [`is_private`]).
pub async fn check_target(url: &reqwest::Url) -> Result<(), UrlError> {
    let host = url.host_str().ok_or(UrlError::Malformed)?;
    let port = url.port_or_known_default().unwrap_or(443);
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return if is_private(ip) {
            Err(UrlError::Private(ip))
        } else {
            Ok(())
        };
    }
    let addresses: Vec<_> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| UrlError::Unresolved(e.to_string()))?
        .collect();
    if addresses.is_empty() {
        return Err(UrlError::Unresolved("no address".into()));
    }
    match addresses.iter().find(|a| is_private(a.ip())) {
        Some(a) => Err(UrlError::Private(a.ip())),
        None => Ok(()),
    }
}

/// Why a command on a destination or a delivery did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// No such destination for this tenant.
    #[error("no event destination {0}")]
    MissingDestination(String),
    /// No such notification for this tenant.
    #[error("no notification {0}")]
    MissingNotification(String),
    /// Nothing to resend to.
    #[error("the notification has no destination to resend to")]
    NoDestination,
    /// The tenant has as many destinations as it may.
    #[error("a tenant has at most {0} event destinations; disable or reuse one")]
    TooMany(usize),
}

/// Most destinations per tenant: every event is fanned out to them in the write that records
/// it, so their number bounds that write.
pub const MAX_DESTINATIONS_PER_TENANT: usize = 50;

/// Creates a destination.
#[derive(Clone)]
pub struct CreateDestination {
    /// The destination, validated.
    pub destination: Destination,
}

impl Command for CreateDestination {
    type Output = Result<Destination, DestinationError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let tenant = TenantId(self.destination.tenant);
        let existing = {
            let table = tx.open_table(crate::store::tables::EVENT_DESTINATIONS)?;
            destination::of_tenant(&table, tenant)?.len()
        };
        if existing >= MAX_DESTINATIONS_PER_TENANT {
            return Ok(Err(DestinationError::TooMany(MAX_DESTINATIONS_PER_TENANT)));
        }
        destination::save(tx, &self.destination)?;
        Ok(Ok(self.destination))
    }
}

/// Changes a destination; absent fields keep their value.
#[derive(Clone)]
pub struct UpdateDestination {
    /// Whose.
    pub tenant: TenantId,
    /// Which.
    pub id: Id,
    /// New URL, validated.
    pub url: Option<String>,
    /// New event types, validated.
    pub event_types: Option<Vec<String>>,
    /// New status; enabling forgets the failure streak.
    pub status: Option<DestinationStatus>,
    /// New description (`Some(None)` clears it).
    pub description: Option<Option<String>>,
    /// Now.
    pub now_ms: i64,
}

impl Command for UpdateDestination {
    type Output = Result<Destination, DestinationError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(mut d) = load(tx, self.tenant, self.id)? else {
            return Ok(Err(DestinationError::MissingDestination(
                self.id.display(destination::PREFIX),
            )));
        };
        if let Some(url) = self.url {
            d.url = url;
        }
        if let Some(types) = self.event_types {
            d.event_types = types;
        }
        if let Some(status) = self.status {
            if status == DestinationStatus::Enabled && d.status == DestinationStatus::Disabled {
                d.failing_since_ms = None;
            }
            d.status = status;
        }
        if let Some(description) = self.description {
            d.description = description;
        }
        d.drop_expired_secrets(self.now_ms);
        d.updated_at_ms = self.now_ms;
        destination::save(tx, &d)?;
        Ok(Ok(d))
    }
}

/// Replaces a destination's secret; the previous one keeps signing for the overlap, and any
/// older one stops at once (see [`Destination::rotate`]).
#[derive(Clone)]
pub struct RotateDestinationSecret {
    /// Whose.
    pub tenant: TenantId,
    /// Which.
    pub id: Id,
    /// The new secret.
    pub secret: String,
    /// Now.
    pub now_ms: i64,
    /// How long the previous secret keeps signing.
    pub overlap_ms: i64,
}

impl Command for RotateDestinationSecret {
    type Output = Result<Destination, DestinationError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let Some(mut d) = load(tx, self.tenant, self.id)? else {
            return Ok(Err(DestinationError::MissingDestination(
                self.id.display(destination::PREFIX),
            )));
        };
        d.rotate(self.secret, self.now_ms, self.overlap_ms);
        d.updated_at_ms = self.now_ms;
        destination::save(tx, &d)?;
        Ok(Ok(d))
    }
}

/// Delivers a notification again (to one destination, or to every one it was meant for),
/// under the same notification id, so receivers that deduplicate still do. A delivery that is
/// still live (queued, in flight or retrying) gets no second job: its job delivers it, and the
/// answer names it as live.
#[derive(Clone)]
pub struct Resend {
    /// Whose.
    pub tenant: TenantId,
    /// The notification.
    pub notification: Id,
    /// Only this destination.
    pub destination: Option<Id>,
    /// Now.
    pub now_ms: i64,
}

/// What a resend did, per destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resent {
    /// The notification.
    pub notification: Id,
    /// Destinations that got a new delivery job.
    pub queued: Vec<Id>,
    /// Destinations whose delivery was still live: nothing was added.
    pub live: Vec<Id>,
}

impl Command for Resend {
    type Output = Result<Resent, DestinationError>;

    fn apply(self, tx: &WriteTxn) -> Result<Self::Output, StoreError> {
        let found: Option<outbox::Notification> = get_record(
            &tx.open_table(tables::NOTIFICATIONS)?,
            keys::tenant_id(self.tenant, self.notification),
        )?;
        let Some(n) = found else {
            return Ok(Err(DestinationError::MissingNotification(
                self.notification.display(outbox::PREFIX),
            )));
        };
        let targets: Vec<Id> = match self.destination {
            Some(id) => {
                if load(tx, self.tenant, id)?.is_none() {
                    return Ok(Err(DestinationError::MissingDestination(
                        id.display(destination::PREFIX),
                    )));
                }
                vec![id]
            }
            None => {
                let existing =
                    outbox::rows_of(&tx.open_table(tables::DELIVERIES)?, self.tenant, n.id)?;
                if existing.is_empty() {
                    destination::subscribed(tx, self.tenant, &n.event_type)?
                        .into_iter()
                        .map(|d| d.id)
                        .collect()
                } else {
                    existing.into_iter().map(|d| d.destination).collect()
                }
            }
        };
        if targets.is_empty() {
            return Ok(Err(DestinationError::NoDestination));
        }
        let mut resent = Resent {
            notification: n.id,
            queued: Vec::new(),
            live: Vec::new(),
        };
        for d in targets {
            if requeue(tx, self.tenant, n.id, d, self.now_ms)? {
                resent.queued.push(d);
            } else {
                resent.live.push(d);
            }
        }
        Ok(Ok(resent))
    }
}

/// Whether a delivery is still live: its job will still run (a row from before rows named
/// their job: while it is pending).
pub fn is_live(tx: &WriteTxn, row: &Delivery) -> Result<bool, StoreError> {
    match row.job {
        Some(job) => Ok(jobs::load_in(tx, job)?.is_some_and(|j| j.status.is_live())),
        None => Ok(row.status == DeliveryStatus::Pending),
    }
}

/// Starts a new round of a finished delivery (keeping its attempts): pending again, carried by
/// a new job, whose predecessor's record goes if it is done (a dead letter stays). A live
/// delivery is left alone; returns whether a job was added.
fn requeue(
    tx: &WriteTxn,
    tenant: TenantId,
    notification: Id,
    destination: Id,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let key = outbox::delivery_key(tenant, notification, destination);
    let found = outbox::load_delivery(&tx.open_table(tables::DELIVERIES)?, &key)?;
    if let Some(row) = &found {
        if is_live(tx, row)? {
            return Ok(false);
        }
        if let Some(previous) = row.job {
            jobs::delete_done(tx, previous)?;
        }
    }
    let payload = outbox::job_payload(notification, destination);
    let job = Job::new(tenant, outbox::DELIVER_JOB, payload, now_ms);
    let row = match found {
        Some(mut row) => {
            row.status = DeliveryStatus::Pending;
            row.job = Some(job.id);
            row
        }
        None => Delivery::pending(notification, destination, job.id),
    };
    put_record(&mut tx.open_table(tables::DELIVERIES)?, &key, &row)?;
    jobs::enqueue(tx, &job)?;
    Ok(true)
}

/// A destination of a tenant, inside a write.
pub fn load(tx: &WriteTxn, tenant: TenantId, id: Id) -> Result<Option<Destination>, StoreError> {
    get_record(
        &tx.open_table(tables::EVENT_DESTINATIONS)?,
        keys::tenant_id(tenant, id),
    )
}

/// A destination of a tenant (another tenant's id finds nothing).
pub fn get(tx: &ReadTxn, tenant: TenantId, id: Id) -> Result<Option<Destination>, StoreError> {
    get_record(
        &tx.open_table(tables::EVENT_DESTINATIONS)?,
        keys::tenant_id(tenant, id),
    )
}

/// A page of the tenant's destinations in creation order after `after`; the flag says whether
/// more follow.
pub fn list(
    tx: &ReadTxn,
    tenant: TenantId,
    after: Option<Id>,
    limit: usize,
) -> Result<(Vec<Destination>, bool), StoreError> {
    let table = tx.open_table(tables::EVENT_DESTINATIONS)?;
    let (start, end) = keys::tenant_range(tenant);
    let lower = match after {
        Some(id) => {
            let mut k = keys::tenant_id(tenant, id).to_vec();
            k.push(0);
            k
        }
        None => start,
    };
    let mut out = Vec::new();
    for entry in table.range::<&[u8]>(lower.as_slice()..end.as_slice())? {
        if out.len() == limit {
            return Ok((out, true));
        }
        let (_, v) = entry?;
        out.push(codec::decode(v.value())?);
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_need_a_host_and_https_unless_http_is_allowed() {
        assert!(check_url("https://example.com/hook", false).is_ok());
        assert_eq!(
            check_url("http://example.com/hook", false),
            Err(UrlError::Scheme)
        );
        assert!(check_url("http://example.com/hook", true).is_ok());
        assert_eq!(check_url("ftp://example.com", true), Err(UrlError::Scheme));
        assert_eq!(check_url("not a url", true), Err(UrlError::Malformed));
        assert_eq!(check_url("/relative", true), Err(UrlError::Malformed));
    }

    #[test]
    fn private_and_metadata_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "64:ff9b::a00:5",
            "::7f00:1",
            "2002:a00:1::1",
            "2001:0:4136:e378::1",
            "fec0::1",
            "192.0.0.8",
            "198.18.0.1",
            "240.0.0.1",
        ] {
            assert!(is_private(private.parse().expect("ip")), "{private}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111"] {
            assert!(!is_private(public.parse().expect("ip")), "{public}");
        }
    }

    #[tokio::test]
    async fn literal_and_resolved_private_targets_are_refused() {
        let url = check_url("https://169.254.169.254/latest", false).expect("url");
        assert!(matches!(
            check_target(&url).await,
            Err(UrlError::Private(_))
        ));
        let url = check_url("http://[::1]:8080/x", true).expect("url");
        assert!(matches!(
            check_target(&url).await,
            Err(UrlError::Private(_))
        ));
        let url = check_url("http://localhost:8080/x", true).expect("url");
        assert!(matches!(
            check_target(&url).await,
            Err(UrlError::Private(_))
        ));
    }
}
