//! The load's random plan, drawn up front from one seed so a run can be repeated.
//!
//! Order totals scale with the customer's credit limit and with the expected number of orders per
//! customer, so that roughly 10–30 % of orders are rejected for lack of credit whatever the
//! `--customers` / `--orders` ratio: with few orders per customer single orders are large (some
//! exceed the limit outright); with many, each is small but together they ask for more credit than
//! the customer has.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;

use crate::domain::customers::{CustomerName, NewCustomer};
use crate::domain::money::Amount;
use crate::domain::ValidationError;

#[derive(Debug, Clone)]
pub struct PlannedOrder {
    /// Index into [`Plan::customers`].
    pub customer: usize,
    pub total: Amount,
    /// Cancel the order later if it is approved.
    pub cancel: bool,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub customers: Vec<NewCustomer>,
    pub orders: Vec<PlannedOrder>,
}

/// Credit limits are drawn in cents from 1 000.00 to 10 000.00.
const CREDIT_LIMIT_CENTS: std::ops::RangeInclusive<i64> = 100_000..=1_000_000;

pub fn draw(customers: u32, orders: u32, cancel_ratio: f64, seed: u64) -> Result<Plan, ValidationError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let limits: Vec<i64> = (0..customers)
        .map(|_| rng.random_range(CREDIT_LIMIT_CENTS))
        .collect();
    let planned_customers = limits
        .iter()
        .enumerate()
        .map(|(index, cents)| {
            Ok(NewCustomer {
                name: CustomerName::parse(format!("Load Customer {index:06}"))?,
                credit_limit: Amount::non_negative(Decimal::new(*cents, 2))?,
            })
        })
        .collect::<Result<Vec<_>, ValidationError>>()?;

    let per_customer = (f64::from(orders) / f64::from(customers.max(1))).max(1.0);
    // Share of its limit a customer's orders ask for in total, tuned by simulation (see tests).
    let demand = 1.5 - 0.95 / per_customer.sqrt();
    let mut planned_orders = Vec::with_capacity(orders as usize);
    if !limits.is_empty() {
        for _ in 0..orders {
            let customer = rng.random_range(0..limits.len());
            let share = rng.random_range(0.1..1.9) * demand / per_customer;
            // Whole cents, at least one; limits are at most 10 000.00, so this cannot overflow.
            let cents = ((limits[customer] as f64 * share).round() as i64).max(1);
            planned_orders.push(PlannedOrder {
                customer,
                total: Amount::positive(Decimal::new(cents, 2))?,
                cancel: rng.random_bool(cancel_ratio),
            });
        }
    }
    Ok(Plan {
        customers: planned_customers,
        orders: planned_orders,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::domain::orders::{decide, OrderState};

    /// Replays a plan one order at a time, cancelling a flagged order after the next one, as a
    /// single load worker does; returns the share of rejected orders.
    fn rejection_ratio(plan: &Plan) -> f64 {
        let mut reserved = vec![Decimal::ZERO; plan.customers.len()];
        let mut pending: Option<(usize, Decimal)> = None;
        let mut rejected = 0;
        for order in &plan.orders {
            let (customer, total) = (order.customer, order.total.value());
            let available = plan.customers[customer].credit_limit.value() - reserved[customer];
            let approved = decide(available, total) == OrderState::Approved;
            if approved {
                reserved[customer] += total;
            } else {
                rejected += 1;
            }
            if let Some((earlier, amount)) = pending.take() {
                reserved[earlier] -= amount;
            }
            if approved && order.cancel {
                pending = Some((customer, total));
            }
        }
        f64::from(rejected) / plan.orders.len() as f64
    }

    #[test]
    fn the_same_seed_draws_the_same_plan() {
        let (first, second) = (draw(10, 50, 0.1, 7).unwrap(), draw(10, 50, 0.1, 7).unwrap());
        let totals = |plan: &Plan| {
            plan.orders
                .iter()
                .map(|o| (o.customer, o.total, o.cancel))
                .collect::<Vec<_>>()
        };
        assert_eq!(totals(&first), totals(&second));
        assert_ne!(totals(&first), totals(&draw(10, 50, 0.1, 8).unwrap()));
    }

    #[test]
    fn a_realistic_share_of_orders_is_rejected_whatever_the_shape() {
        for (customers, orders) in [
            (100, 100),
            (100, 300),
            (100, 1000),
            (100, 5000),
            (10, 5000),
            (1000, 1000),
        ] {
            let ratio = rejection_ratio(&draw(customers, orders, 0.1, 42).unwrap());
            assert!(
                (0.08..=0.32).contains(&ratio),
                "{customers} customers, {orders} orders: {ratio}"
            );
        }
    }

    #[test]
    fn totals_are_positive_amounts_in_cents() {
        let plan = draw(5, 200, 0.0, 1).unwrap();
        assert!(plan
            .orders
            .iter()
            .all(|o| o.total.value() > Decimal::ZERO && o.total.value().scale() == 2));
        assert!(plan.orders.iter().all(|o| !o.cancel));
    }
}
