//! Profiles: mixes of steps and provider faults, each aimed at one kind of trouble, so a short
//! budget of seeds still reaches every known way to go wrong.

use super::provider::Faults;

/// A mix of steps and provider faults aimed at one kind of trouble.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// Its name, printed with a failing seed.
    pub name: &'static str,
    /// Weight of each of [`super::ops::KINDS`], in order.
    pub weights: [u32; 30],
    /// The provider's faults.
    pub faults: Faults,
    /// Price of one call, USD: a half cent makes rounding visible, a whole cent keeps it out
    /// of the way of everything else.
    pub call_price: &'static str,
}

const CALM_FAULTS: Faults = Faults {
    error_before: 5,
    lost_reply: 10,
    decline: 5,
    requires_action: 5,
    processing: 5,
    refuse_refund: 5,
    webhook_lost: 10,
    webhook_duplicated: 10,
    list_error: 5,
};

/// A provider that always answers and always succeeds: payments stay out of the way.
const NO_FAULTS: Faults = Faults {
    error_before: 0,
    lost_reply: 0,
    decline: 0,
    requires_action: 0,
    processing: 0,
    refuse_refund: 0,
    webhook_lost: 0,
    webhook_duplicated: 10,
    list_error: 0,
};

/// The profiles; a seed runs `PROFILES[seed % len]`.
pub const PROFILES: [Profile; 9] = [
    Profile {
        name: "mixed",
        //        ing late dup ext run pay void crd ref job jcr dlv cus set for rec adv crs stl upd chg cpn cn tup ar prg alr ent key mtr
        weights: [
            10, 3, 2, 1, 6, 4, 2, 2, 3, 12, 2, 8, 2, 1, 1, 1, 8, 2, 2, 3, 3, 2, 2, 3, 1, 3, 2, 2,
            1, 1,
        ],
        faults: Faults {
            error_before: 10,
            lost_reply: 20,
            decline: 10,
            requires_action: 15,
            processing: 10,
            refuse_refund: 10,
            webhook_lost: 10,
            webhook_duplicated: 15,
            list_error: 10,
        },
        call_price: "0.01",
    },
    Profile {
        name: "usage",
        weights: [
            14, 8, 4, 0, 8, 1, 3, 3, 0, 8, 1, 4, 0, 0, 0, 0, 10, 2, 1, 2, 3, 2, 2, 3, 1, 3, 2, 2,
            1, 1,
        ],
        faults: CALM_FAULTS,
        call_price: "0.005",
    },
    Profile {
        name: "voided-adjustments",
        weights: [
            10, 8, 2, 0, 8, 1, 6, 2, 0, 6, 0, 3, 0, 0, 0, 0, 10, 2, 1, 0, 4, 2, 2, 3, 1, 3, 2, 2,
            1, 1,
        ],
        faults: NO_FAULTS,
        call_price: "0.01",
    },
    Profile {
        name: "extreme-values",
        weights: [
            10, 0, 2, 5, 8, 1, 2, 2, 0, 8, 1, 4, 0, 0, 0, 0, 10, 2, 1, 0, 0, 2, 2, 3, 1, 3, 2, 2,
            1, 1,
        ],
        faults: CALM_FAULTS,
        call_price: "0.01",
    },
    Profile {
        name: "void-in-flight",
        weights: [
            6, 0, 1, 0, 8, 3, 8, 0, 0, 12, 3, 6, 1, 1, 0, 3, 6, 2, 2, 0, 2, 2, 2, 3, 1, 3, 2, 2, 1,
            1,
        ],
        faults: Faults {
            error_before: 10,
            lost_reply: 45,
            decline: 5,
            requires_action: 5,
            processing: 10,
            refuse_refund: 5,
            webhook_lost: 30,
            webhook_duplicated: 10,
            list_error: 5,
        },
        call_price: "0.01",
    },
    Profile {
        name: "requires-action",
        weights: [
            6, 0, 1, 0, 10, 14, 0, 0, 0, 12, 0, 8, 6, 1, 0, 1, 14, 1, 4, 0, 1, 2, 2, 3, 1, 3, 2, 2,
            1, 1,
        ],
        faults: Faults {
            error_before: 5,
            lost_reply: 10,
            decline: 5,
            requires_action: 50,
            processing: 5,
            refuse_refund: 5,
            webhook_lost: 10,
            webhook_duplicated: 10,
            list_error: 5,
        },
        call_price: "0.01",
    },
    Profile {
        name: "refunds",
        weights: [
            6, 0, 1, 0, 8, 2, 0, 0, 12, 14, 1, 8, 1, 1, 0, 1, 6, 1, 2, 0, 1, 2, 2, 3, 1, 3, 2, 2,
            1, 1,
        ],
        faults: Faults {
            error_before: 5,
            lost_reply: 35,
            decline: 0,
            requires_action: 0,
            processing: 0,
            refuse_refund: 20,
            webhook_lost: 10,
            webhook_duplicated: 10,
            list_error: 5,
        },
        call_price: "0.01",
    },
    Profile {
        name: "mismatched-events",
        weights: [
            6, 0, 1, 0, 8, 4, 1, 0, 0, 12, 1, 8, 2, 1, 6, 1, 6, 1, 2, 0, 0, 2, 2, 3, 1, 3, 2, 2, 1,
            1,
        ],
        faults: Faults {
            error_before: 5,
            lost_reply: 10,
            decline: 30,
            requires_action: 40,
            processing: 5,
            refuse_refund: 5,
            webhook_lost: 10,
            webhook_duplicated: 10,
            list_error: 5,
        },
        call_price: "0.01",
    },
    Profile {
        name: "plan-changes",
        //        ing late dup ext run pay void crd ref job jcr dlv cus set for rec adv crs stl upd chg cpn cn tup ar prg alr ent key mtr
        weights: [
            10, 6, 2, 0, 8, 2, 4, 2, 1, 8, 1, 4, 0, 0, 0, 0, 10, 2, 1, 0, 8, 2, 2, 3, 1, 3, 2, 2,
            1, 1,
        ],
        faults: CALM_FAULTS,
        call_price: "0.005",
    },
];
