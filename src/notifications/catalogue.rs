//! The event catalogue: every type Tally records, named `noun.verb_past`. Later capabilities
//! add theirs here.

/// Every event type, in the order the README lists them.
pub const TYPES: &[&str] = &[
    "customer.created",
    "customer.updated",
    "subscription.created",
    "subscription.updated",
    "subscription.canceled",
    "subscription.trial_will_end",
    "invoice.finalized",
    "invoice.paid",
    "invoice.voided",
    "invoice.uncollectible",
    "invoice.payment_failed",
    "payment.succeeded",
    "payment.failed",
    "payment.refunded",
    "credit_grant.created",
    "credit_grant.expired",
    "credit_grant.depleted",
    "credit_note.created",
    "top_up.succeeded",
    "top_up.failed",
    "reconciliation.completed",
    "dead_letter.created",
    "destination.disabled",
    "alert.triggered",
    "credit_balance.recovered",
];

/// Whether `name` is a catalogue type.
pub fn is_known(name: &str) -> bool {
    TYPES.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_noun_dot_verb_past_and_listed_once() {
        for (i, t) in TYPES.iter().enumerate() {
            let (noun, verb) = t.split_once('.').expect("noun.verb");
            assert!(!noun.is_empty() && !verb.is_empty(), "{t}");
            // Past tense, the state an invoice entered (`invoice.uncollectible`), or the one
            // advance notice (`subscription.trial_will_end`, named as peers name it).
            assert!(
                verb.ends_with('d') || verb == "uncollectible" || verb == "trial_will_end",
                "{t}"
            );
            assert!(!TYPES[..i].contains(t), "{t} listed twice");
        }
        assert!(is_known("invoice.paid"));
        assert!(!is_known("invoice.created"));
    }
}
