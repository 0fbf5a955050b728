//! Taxes in the simulation: the customers get a tax rate at setup (one exclusive, one
//! inclusive), and the invariants: every invoice's tax is the sum of its lines' rounded taxes,
//! each refund and credit note takes back its share of its invoice's tax, and `tax_payable`
//! holds the tax of the invoices that stand less what refunds and credit notes took back.

use std::collections::BTreeMap;

use super::world::{Violation, World};
use crate::billing::invoice::{Invoice, InvoiceStatus};
use crate::billing::tax;
use crate::decimal::Stored;
use crate::id::Id;
use crate::ledger::account::{AccountRef, SystemAccount};
use crate::ledger::journal::{self, Filter};
use crate::payments::refund::tax_share;
use crate::tax_rates::{CreateTaxRate, TaxRate};

/// Creates the setup's tax rates: 19 % exclusive and 7.5 % inclusive, in that order.
pub fn rates(world: &mut World, at_ms: i64) -> Result<Vec<Id>, Violation> {
    let mut out = Vec::new();
    for (name, percentage, inclusive) in [("VAT", "19", false), ("GST incl.", "7.5", true)] {
        let rate = TaxRate {
            id: Id::generate_at(at_ms),
            display_name: name.into(),
            percentage: Stored(crate::decimal::parse(percentage).map_err(|e| e.to_string())?),
            inclusive,
            jurisdiction: None,
            country: None,
            created_at_ms: at_ms,
            archived_at_ms: None,
        };
        out.push(
            world
                .submit(CreateTaxRate {
                    tenant: world.tenant,
                    rate,
                })?
                .id,
        );
    }
    Ok(out)
}

fn err(e: impl std::fmt::Display) -> Violation {
    e.to_string()
}

/// The tax invariants over every invoice and the ledger.
pub fn check(world: &World, invoices: &[Invoice]) -> Result<(), Violation> {
    let mut standing = 0i64;
    let mut by_id = BTreeMap::new();
    for invoice in invoices {
        let exponent = crate::currency::minor_unit_exponent(&invoice.currency).unwrap_or(2);
        // Rounded per line as the period computes it (interim invoices' part added back).
        let whole = super::progressive::taxed(world, invoice)?;
        let mut sum = 0i64;
        for t in &whole.tax_lines {
            let mut of_rate = 0i64;
            for line in &whole.lines {
                of_rate +=
                    tax::line_tax(line.amount_exact.0, t.percentage.0, t.inclusive, exponent)
                        .map_err(err)?;
            }
            if of_rate != t.tax_minor {
                return Err(format!(
                    "invoice {}: rate {} shows {} of tax, its lines' rounded taxes sum to {of_rate}",
                    invoice.id.display(crate::billing::invoice::PREFIX),
                    t.display_name,
                    t.tax_minor
                ));
            }
            sum += of_rate;
        }
        if sum != whole.tax_minor {
            return Err(format!(
                "invoice {}: tax {} but its tax lines sum to {sum}",
                invoice.id.display(crate::billing::invoice::PREFIX),
                whole.tax_minor
            ));
        }
        if invoice.status != InvoiceStatus::Void {
            standing += invoice.tax_minor;
        }
        by_id.insert(invoice.id, invoice);
    }
    let tx = world.read()?;
    let account = AccountRef::System(SystemAccount::TaxPayable);
    // Every entry: a refund that should have taken tax back and did not has no tax leg.
    let filter = Filter::default();
    let mut taken_back = 0i64;
    let mut after = 0;
    loop {
        let (entries, next) = journal::list(&tx, world.tenant, &filter, after, 500).map_err(err)?;
        for entry in &entries {
            if !matches!(
                entry.kind.as_str(),
                "refund" | "refund_reversal" | "credit_note"
            ) {
                continue;
            }
            let leg = |a: AccountRef| -> i64 {
                entry
                    .postings
                    .iter()
                    .filter(|p| p.account == a)
                    .map(|p| p.amount_minor)
                    .sum()
            };
            let invoice = entry.links.invoice.and_then(|i| by_id.get(&i));
            // What went back: to the provider (refunds), or off the receivable (credit notes).
            let refunded = match invoice {
                Some(i) if entry.kind == "credit_note" => -leg(AccountRef::Receivable {
                    customer: i.customer,
                }),
                _ => -leg(AccountRef::System(SystemAccount::PspClearing)),
            };
            let tax_leg = leg(account);
            // Money held in suspense never carried tax (its refund's source is suspense).
            let from_revenue = leg(AccountRef::System(SystemAccount::Suspense)) == 0;
            let expected = match invoice {
                Some(i) if from_revenue => tax_share(refunded, i.tax_minor, i.total_minor),
                _ => 0,
            };
            if tax_leg != expected {
                return Err(format!(
                    "{} {}: {tax_leg} of tax taken back of {refunded}, its share is {expected} \
                     (invoice tax {:?} of {:?})",
                    entry.kind,
                    entry.id.display(journal::PREFIX),
                    invoice.map(|i| i.tax_minor),
                    invoice.map(|i| i.total_minor)
                ));
            }
            taken_back += tax_leg;
        }
        match next {
            Some(seq) => after = seq,
            None => break,
        }
    }
    let currencies: std::collections::BTreeSet<&str> =
        invoices.iter().map(|i| i.currency.as_str()).collect();
    let balances = tx.open_table(crate::store::tables::BALANCES).map_err(err)?;
    let mut books = 0i64;
    for currency in currencies {
        books += journal::balance(&balances, world.tenant, currency, account).map_err(err)?;
    }
    if books != -(standing - taken_back) {
        return Err(format!(
            "tax_payable holds {books}; the standing invoices' tax {standing} less {taken_back} \
             taken back by refunds gives {}",
            -(standing - taken_back)
        ));
    }
    Ok(())
}
