//! The load generator: customers, then orders (some cancelled later), written by concurrent
//! workers straight through the domain layer, so every write is a real transaction with its
//! outbox rows, exactly as through the API.
//!
//! The plan (credit limits, which customer orders what, which approved orders get cancelled) comes
//! from one seed. Outcomes depend on the interleaving of workers, so they repeat exactly only with
//! `--concurrency 1`. A flagged order is cancelled by its worker after that worker's next order.

mod pacer;
mod plan;
mod progress;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;
use serde::Serialize;
use sqlx::PgPool;
use thiserror::Error;
use tokio::task::{JoinError, JoinSet};
use uuid::Uuid;

use self::pacer::Pacer;
use self::plan::Plan;
pub use self::progress::ProgressMode;
use crate::domain::orders::OrderState;
use crate::domain::traceparent::TraceParent;
use crate::domain::{customers, orders, DomainError, ValidationError};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub customers: u32,
    pub orders: u32,
    pub concurrency: u32,
    pub cancel_ratio: f64,
    pub seed: Option<u64>,
    /// Outbox events per second; 0 = unlimited.
    pub rate: f64,
    pub progress: ProgressMode,
}

impl LoadOptions {
    /// One connection per worker.
    pub fn pool_size(&self) -> u32 {
        self.concurrency.max(1)
    }
}

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("the load plan is invalid")]
    Plan(#[from] ValidationError),
    #[error("a write failed")]
    Write(#[from] DomainError),
    #[error("a load worker stopped unexpectedly")]
    Worker(#[from] JoinError),
}

/// What a run wrote. `orders_approved` counts every order approved when placed, including those
/// cancelled later, so `orders = orders_approved + orders_rejected` and
/// `outbox_events = customers + 2 * orders_approved + orders_rejected + 2 * orders_cancelled`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub customers: u64,
    pub orders: u64,
    pub orders_approved: u64,
    pub orders_rejected: u64,
    pub orders_cancelled: u64,
    pub outbox_events: u64,
    pub elapsed_seconds: f64,
    pub events_per_second: f64,
}

impl Summary {
    pub fn to_json_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    fn add(&mut self, other: &Summary) {
        self.customers += other.customers;
        self.orders += other.orders;
        self.orders_approved += other.orders_approved;
        self.orders_rejected += other.orders_rejected;
        self.orders_cancelled += other.orders_cancelled;
        self.outbox_events += other.outbox_events;
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "customers: {}", self.customers)?;
        writeln!(
            f,
            "orders: {} (approved {}, rejected {}, cancelled {})",
            self.orders, self.orders_approved, self.orders_rejected, self.orders_cancelled
        )?;
        writeln!(f, "outbox events written: {}", self.outbox_events)?;
        writeln!(f, "elapsed: {:.2} s", self.elapsed_seconds)?;
        writeln!(f, "throughput: {:.1} events/s", self.events_per_second)?;
        writeln!(f, "seed: {}", self.seed)
    }
}

/// What every worker shares.
#[derive(Debug)]
struct Shared {
    pool: PgPool,
    plan: Plan,
    next: AtomicUsize,
    pacer: Pacer,
    progress: ProgressBar,
}

pub async fn run(pool: &PgPool, options: &LoadOptions) -> Result<Summary, LoadError> {
    let seed = options.seed.unwrap_or_else(rand::random);
    let plan = plan::draw(options.customers, options.orders, options.cancel_ratio, seed)?;
    tracing::info!(
        seed,
        customers = options.customers,
        orders = options.orders,
        concurrency = options.concurrency,
        "load started"
    );
    let started = Instant::now();
    let progress = progress::bar(
        options.progress,
        u64::from(options.customers) + u64::from(options.orders),
    );
    let shared = Arc::new(Shared {
        pool: pool.clone(),
        plan,
        next: AtomicUsize::new(0),
        pacer: Pacer::new(options.rate),
        progress,
    });

    shared.progress.set_message("customers");
    let mut set = JoinSet::new();
    for _ in 0..options.concurrency {
        set.spawn(create_customers(Arc::clone(&shared)));
    }
    let mut created: Vec<(usize, Uuid)> = Vec::with_capacity(shared.plan.customers.len());
    let mut summary = Summary {
        seed,
        ..Summary::default()
    };
    for (worker_summary, ids) in join_all(set).await? {
        summary.add(&worker_summary);
        created.extend(ids);
    }
    created.sort_unstable_by_key(|(index, _)| *index);
    let customer_ids: Arc<Vec<Uuid>> = Arc::new(created.into_iter().map(|(_, id)| id).collect());

    shared.progress.set_message("orders");
    shared.next.store(0, Ordering::Relaxed);
    let mut set = JoinSet::new();
    for _ in 0..options.concurrency {
        set.spawn(place_orders(Arc::clone(&shared), Arc::clone(&customer_ids)));
    }
    for worker_summary in join_all(set).await? {
        summary.add(&worker_summary);
    }
    shared.progress.finish_and_clear();

    summary.elapsed_seconds = started.elapsed().as_secs_f64();
    summary.events_per_second = if summary.elapsed_seconds > 0.0 {
        summary.outbox_events as f64 / summary.elapsed_seconds
    } else {
        0.0
    };
    tracing::info!(
        outbox_events = summary.outbox_events,
        elapsed_seconds = summary.elapsed_seconds,
        "load done"
    );
    Ok(summary)
}

/// Waits for every worker; the first failure aborts the others (dropping the set aborts them).
async fn join_all<T: 'static>(mut set: JoinSet<Result<T, LoadError>>) -> Result<Vec<T>, LoadError> {
    let mut results = Vec::with_capacity(set.len());
    while let Some(joined) = set.join_next().await {
        results.push(joined??);
    }
    Ok(results)
}

async fn create_customers(shared: Arc<Shared>) -> Result<(Summary, Vec<(usize, Uuid)>), LoadError> {
    let mut summary = Summary::default();
    let mut ids = Vec::new();
    loop {
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(new) = shared.plan.customers.get(index) else {
            break;
        };
        let committed = customers::create(&shared.pool, new.clone(), &TraceParent::generate()).await?;
        ids.push((index, committed.value.id));
        summary.customers += 1;
        written(&shared, &mut summary, committed.event_ids.len()).await;
        shared.progress.inc(1);
    }
    Ok((summary, ids))
}

async fn place_orders(shared: Arc<Shared>, customer_ids: Arc<Vec<Uuid>>) -> Result<Summary, LoadError> {
    let mut summary = Summary::default();
    let mut to_cancel: Option<Uuid> = None;
    loop {
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(planned) = shared.plan.orders.get(index) else {
            break;
        };
        let Some(customer_id) = customer_ids.get(planned.customer) else {
            break;
        };
        let committed = orders::place(
            &shared.pool,
            *customer_id,
            planned.total,
            &TraceParent::generate(),
        )
        .await?;
        summary.orders += 1;
        let approved = committed.value.state == OrderState::Approved;
        if approved {
            summary.orders_approved += 1;
        } else {
            summary.orders_rejected += 1;
        }
        written(&shared, &mut summary, committed.event_ids.len()).await;
        shared.progress.inc(1);
        // Cancel the previous flagged order now, so cancellations interleave with new orders.
        if let Some(order_id) = to_cancel.take() {
            cancel(&shared, &mut summary, order_id).await?;
        }
        if approved && planned.cancel {
            to_cancel = Some(committed.value.id);
        }
    }
    if let Some(order_id) = to_cancel {
        cancel(&shared, &mut summary, order_id).await?;
    }
    Ok(summary)
}

async fn cancel(shared: &Shared, summary: &mut Summary, order_id: Uuid) -> Result<(), LoadError> {
    let committed = orders::cancel(&shared.pool, order_id, &TraceParent::generate()).await?;
    summary.orders_cancelled += 1;
    written(shared, summary, committed.event_ids.len()).await;
    Ok(())
}

async fn written(shared: &Shared, summary: &mut Summary, events: usize) {
    let events = events as u64;
    summary.outbox_events += events;
    shared.pacer.pace(events).await;
}
