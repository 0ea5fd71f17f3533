//! The streaming loop driven by a scripted replication stream and a sink that injects faults
//! (holds a batch, rejects one, fails after writing): what the slot is told never runs ahead
//! of what the sink holds, and a replay after a failure loses nothing.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::progress::Progress;
use super::session::{Beacons, ReplicationStream, Session};
use super::{CaptureConfig, CaptureError, TableRoutes};
use crate::lsn::Lsn;
use crate::metrics::Metrics;
use crate::replication::{PgTarget, ReplicationError, StreamMessage};
use crate::sink::{Batch, Completion, Sink, SinkError};
use crate::table::TableName;

const OUTBOX: u32 = 16_384;

fn config() -> CaptureConfig {
    let outbox = TableName {
        schema: "public".into(),
        name: "outbox".into(),
    };
    CaptureConfig {
        target: PgTarget::from_url("postgres://bridge@localhost/shop", "test").expect("a valid url"),
        primary: PgTarget::from_url("postgres://bridge@localhost/shop", "test").expect("a valid url"),
        slot: "outbox_bridge".into(),
        publication: "outbox_pub".into(),
        tables: vec![outbox],
        routes: TableRoutes::default(),
        encode: Default::default(),
        message_prefix: "outbox".into(),
        window: 4,
        // Every transaction its own batch: the faults below are per batch.
        linger: Duration::ZERO,
        status_interval: Duration::from_millis(10),
        shutdown_timeout: Duration::from_secs(1),
        retained_wal_warn_bytes: i64::MAX,
        retained_wal_warn_age: Duration::from_secs(3600),
        heartbeat: None,
        replication_timeout: Duration::from_secs(60),
        synchronous_standby: None,
        failover_slot: Default::default(),
    }
}

// pgoutput messages, as the walsender sends them.
fn cstr(b: &mut BytesMut, s: &str) {
    b.put_slice(s.as_bytes());
    b.put_u8(0);
}

fn relation() -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(b'R');
    b.put_u32(OUTBOX);
    cstr(&mut b, "public");
    cstr(&mut b, "outbox");
    b.put_u8(b'd');
    let columns = [
        ("id", 2950, 1),
        ("aggregatetype", 25, 0),
        ("aggregateid", 25, 0),
        ("type", 25, 0),
        ("payload", 3802, 0),
    ];
    b.put_u16(columns.len() as u16);
    for (name, oid, flags) in columns {
        b.put_u8(flags);
        cstr(&mut b, name);
        b.put_u32(oid);
        b.put_i32(-1);
    }
    b.freeze()
}

fn wal(at: u64, data: Bytes) -> StreamMessage {
    StreamMessage::XLogData {
        start: Lsn(at),
        end: Lsn(at + data.len() as u64),
        data,
    }
}

/// One transaction inserting one outbox row; it ends at `end`.
fn transaction(n: u64, end: u64) -> Vec<StreamMessage> {
    let mut begin = BytesMut::new();
    begin.put_u8(b'B');
    begin.put_u64(end - 8);
    begin.put_i64(0);
    begin.put_u32(700 + n as u32);
    let mut insert = BytesMut::new();
    insert.put_u8(b'I');
    insert.put_u32(OUTBOX);
    insert.put_u8(b'N');
    let id = format!("00000000-0000-0000-0000-{n:012}");
    let values = [
        id.as_str(),
        "Order",
        &format!("o-{n}"),
        "OrderPlaced",
        &format!("{{\"n\": {n}}}"),
    ];
    insert.put_u16(values.len() as u16);
    for v in values {
        insert.put_u8(b't');
        insert.put_u32(v.len() as u32);
        insert.put_slice(v.as_bytes());
    }
    let mut commit = BytesMut::new();
    commit.put_u8(b'C');
    commit.put_u8(0);
    commit.put_u64(end - 8);
    commit.put_u64(end);
    commit.put_i64(0);
    vec![
        wal(end - 30, begin.freeze()),
        wal(end - 20, insert.freeze()),
        wal(end - 8, commit.freeze()),
    ]
}

/// A scripted message, or a pause (long enough for the open batch to go out on its own).
enum Step {
    Message(StreamMessage),
    Pause,
}

/// The walsender's side: the scripted messages, then silence; records every status update.
struct Script {
    steps: VecDeque<Step>,
    /// The pause under way: kept here, so a read the loop drops mid-pause does not cut it short.
    paused_until: Option<tokio::time::Instant>,
    statuses: Arc<Mutex<Vec<Lsn>>>,
}

impl Script {
    fn new(steps: Vec<Step>) -> Self {
        Self {
            steps: steps.into(),
            paused_until: None,
            statuses: Arc::default(),
        }
    }

    fn highest_status(&self) -> Lsn {
        let statuses = self.statuses.lock().expect("not poisoned");
        statuses.iter().copied().max().unwrap_or(Lsn(0))
    }
}

impl ReplicationStream for Script {
    async fn next_message(&mut self) -> Result<StreamMessage, ReplicationError> {
        // Taken when polled, so a dropped (unpolled) future loses no message.
        loop {
            if let Some(until) = self.paused_until {
                tokio::time::sleep_until(until).await;
                self.paused_until = None;
            }
            match self.steps.pop_front() {
                Some(Step::Message(m)) => return Ok(m),
                Some(Step::Pause) => {
                    self.paused_until = Some(tokio::time::Instant::now() + Duration::from_millis(50));
                }
                None => std::future::pending().await,
            }
        }
    }

    fn send_status(
        &mut self,
        flushed: Lsn,
        _reply: bool,
    ) -> impl Future<Output = Result<(), ReplicationError>> + Send {
        self.statuses.lock().expect("not poisoned").push(flushed);
        async { Ok(()) }
    }
}

#[derive(Clone, Copy, Debug)]
enum Fate {
    Accept,
    /// Completed only by `release`.
    Hold,
    Reject,
    /// Written, then reported as failed (a timeout after Kinesis stored it).
    WriteThenFail,
}

/// A held batch: its completion, and its records' keys.
type Held = (oneshot::Sender<Result<(), SinkError>>, Vec<String>);

#[derive(Default)]
struct FaultSink {
    fates: Mutex<VecDeque<Fate>>,
    /// What the stream durably holds, in arrival order: each record's `aggregateid`.
    durable: Mutex<Vec<String>>,
    held: Mutex<Vec<Held>>,
}

impl FaultSink {
    fn with(fates: &[Fate]) -> Arc<Self> {
        Arc::new(Self {
            fates: Mutex::new(fates.iter().copied().collect()),
            ..Self::default()
        })
    }

    fn store(&self, keys: Vec<String>) {
        self.durable.lock().expect("not poisoned").extend(keys);
    }

    fn release(&self) {
        for (tx, keys) in self.held.lock().expect("not poisoned").drain(..) {
            self.store(keys);
            let _ = tx.send(Ok(()));
        }
    }

    fn durable(&self) -> Vec<String> {
        self.durable.lock().expect("not poisoned").clone()
    }
}

impl Sink for FaultSink {
    fn limits(&self) -> crate::sink::Limits {
        crate::sink::kinesis::LIMITS
    }

    fn submit(&self, batch: Batch) -> Completion {
        let fate = self
            .fates
            .lock()
            .expect("not poisoned")
            .pop_front()
            .unwrap_or(Fate::Accept);
        let keys: Vec<String> = batch.records.iter().map(|r| r.partition_key.clone()).collect();
        let (tx, rx) = oneshot::channel();
        let refused = || SinkError::Rejected {
            code: "Injected".into(),
            source: "injected by the test".into(),
        };
        match fate {
            Fate::Accept => {
                self.store(keys);
                let _ = tx.send(Ok(()));
            }
            Fate::Hold => self.held.lock().expect("not poisoned").push((tx, keys)),
            Fate::Reject => {
                let _ = tx.send(Err(refused()));
            }
            Fate::WriteThenFail => {
                self.store(keys);
                let _ = tx.send(Err(refused()));
            }
        }
        rx
    }
}

/// The relation, then each transaction followed by a pause: one batch per transaction.
/// What a session borrows: configuration, metrics, health beacons and the sink.
struct Rig {
    cfg: CaptureConfig,
    metrics: Arc<Metrics>,
    beacons: Beacons,
    sink: Arc<FaultSink>,
}

impl Rig {
    fn new(fates: &[Fate]) -> Self {
        let metrics = Metrics::new();
        Self {
            cfg: config(),
            beacons: Beacons::new(&metrics.health),
            metrics,
            sink: FaultSink::with(fates),
        }
    }

    fn session<'a>(&'a self, progress: &'a mut Progress) -> Session<'a> {
        Session::new(
            &self.cfg,
            &*self.sink,
            &self.metrics,
            &self.beacons,
            progress,
            Default::default(),
        )
    }
}

fn script(transactions: &[(u64, u64)]) -> Script {
    let mut steps = vec![Step::Message(wal(0x100, relation()))];
    for &(n, end) in transactions {
        steps.extend(transaction(n, end).into_iter().map(Step::Message));
        steps.push(Step::Pause);
    }
    Script::new(steps)
}

async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..500 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_slot_is_never_told_more_than_the_sink_holds() {
    let rig = Rig::new(&[Fate::Accept, Fate::Hold, Fate::Accept]);
    let sink = &rig.sink;
    let mut progress = Progress::starting_at(Lsn(0x100));
    let mut session = rig.session(&mut progress);
    let mut stream = script(&[(1, 0x1000), (2, 0x2000), (3, 0x3000)]);
    let statuses = stream.statuses.clone();
    let shutdown = CancellationToken::new();
    let highest = || statuses.lock().expect("not poisoned").iter().copied().max();
    let control = async {
        until("the first transaction acknowledged", || {
            highest() == Some(Lsn(0x1000))
        })
        .await;
        until("all three batches submitted", || sink.durable().len() == 2).await;
        // The third batch is durable, the second is not: the slot stays at the first.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            highest(),
            Some(Lsn(0x1000)),
            "acknowledged past a batch the sink does not hold"
        );
        sink.release();
        until("the last transaction acknowledged", || {
            highest() == Some(Lsn(0x3000))
        })
        .await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(session.stream(&mut stream, &shutdown), control);
    assert!(result.is_ok(), "{result:?}");
    session.finish(&mut stream).await;
    assert_eq!(stream.highest_status(), Lsn(0x3000));
    assert_eq!(sink.durable(), ["o-1", "o-3", "o-2"]);
}

#[tokio::test]
async fn a_refused_batch_ends_the_session_and_nothing_after_it_is_acknowledged() {
    let rig = Rig::new(&[Fate::Accept, Fate::Reject]);
    let mut progress = Progress::starting_at(Lsn(0x100));
    let mut stream = script(&[(1, 0x1000), (2, 0x2000), (3, 0x3000)]);
    let shutdown = CancellationToken::new();
    let result = {
        let mut session = rig.session(&mut progress);
        tokio::time::timeout(Duration::from_secs(5), session.stream(&mut stream, &shutdown))
            .await
            .expect("the session ends by itself")
    };
    assert!(matches!(result, Err(CaptureError::Sink(_))), "{result:?}");
    assert!(
        stream.highest_status() <= Lsn(0x1000),
        "{:?}",
        stream.highest_status()
    );
    assert_eq!(
        progress.flushed(),
        Lsn(0x1000),
        "a reconnect resumes after the first"
    );
}

#[tokio::test]
async fn a_batch_written_then_failed_is_replayed_and_nothing_is_lost() {
    let rig = Rig::new(&[Fate::Accept, Fate::WriteThenFail]);
    let sink = &rig.sink;
    let mut progress = Progress::starting_at(Lsn(0x100));
    let all = [(1, 0x1000), (2, 0x2000), (3, 0x3000)];
    let shutdown = CancellationToken::new();
    {
        let mut stream = script(&all);
        let mut session = rig.session(&mut progress);
        let result = tokio::time::timeout(Duration::from_secs(5), session.stream(&mut stream, &shutdown))
            .await
            .expect("the session ends by itself");
        assert!(result.is_err());
    }
    // The next connection starts where the slot was told: the server sends again what follows.
    let resume = progress.flushed();
    assert_eq!(resume, Lsn(0x1000));
    let replay: Vec<(u64, u64)> = all.iter().copied().filter(|&(_, end)| end > resume.0).collect();
    let mut stream = script(&replay);
    let statuses = stream.statuses.clone();
    let mut session = rig.session(&mut progress);
    let control = async {
        until("the replay acknowledged", || {
            statuses.lock().expect("not poisoned").contains(&Lsn(0x3000))
        })
        .await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(session.stream(&mut stream, &shutdown), control);
    assert!(result.is_ok(), "{result:?}");
    let durable = sink.durable();
    for key in ["o-1", "o-2", "o-3"] {
        assert!(durable.iter().any(|k| k == key), "{key} lost: {durable:?}");
    }
    assert_eq!(
        durable.iter().filter(|k| *k == "o-2").count(),
        2,
        "the failed write, replayed"
    );
}

#[tokio::test]
async fn an_idle_server_position_is_acknowledged_when_asked() {
    let rig = Rig::new(&[]);
    let mut progress = Progress::starting_at(Lsn(0x100));
    let mut session = rig.session(&mut progress);
    let mut stream = Script::new(vec![Step::Message(StreamMessage::Keepalive {
        wal_end: Lsn(0x9000),
        server_time: 1_000,
        reply_requested: true,
    })]);
    let statuses = stream.statuses.clone();
    let shutdown = CancellationToken::new();
    let control = async {
        until("the keepalive's position acknowledged", || {
            statuses.lock().expect("not poisoned").contains(&Lsn(0x9000))
        })
        .await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(session.stream(&mut stream, &shutdown), control);
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn with_a_synchronous_standby_a_transaction_goes_only_once_the_standby_flushed_its_commit() {
    let mut rig = Rig::new(&[]);
    let (standby, flushed) = tokio::sync::watch::channel(Lsn(0));
    rig.beacons.standby = Some(flushed);
    let sink = rig.sink.clone();
    let mut progress = Progress::starting_at(Lsn(0x100));
    let mut session = rig.session(&mut progress);
    let mut stream = script(&[(1, 0x1000), (2, 0x2000)]);
    let shutdown = CancellationToken::new();
    let control = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(sink.durable().is_empty(), "published before the standby had it");
        // Past the start of the first commit record but not its end: still held.
        standby.send_replace(Lsn(0x1000 - 4));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            sink.durable().is_empty(),
            "published with half a commit record on the standby"
        );
        standby.send_replace(Lsn(0x1000));
        until("the first transaction published", || sink.durable() == ["o-1"]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            sink.durable(),
            ["o-1"],
            "the second commit is not on the standby yet"
        );
        standby.send_replace(Lsn(0x2000));
        until("the second transaction published", || sink.durable().len() == 2).await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(session.stream(&mut stream, &shutdown), control);
    assert!(result.is_ok(), "{result:?}");
}

/// A non-transactional logical message at `at`, as pgoutput sends it.
fn message(at: u64, prefix: &str, content: &str) -> StreamMessage {
    let mut b = BytesMut::new();
    b.put_u8(b'M');
    b.put_u8(0);
    b.put_u64(at);
    cstr(&mut b, prefix);
    b.put_u32(content.len() as u32);
    b.put_slice(content.as_bytes());
    wal(at, b.freeze())
}

#[tokio::test]
async fn a_backfill_chunk_goes_out_at_its_high_watermark_not_at_the_next_status_update() {
    let mut rig = Rig::new(&[]);
    // A status update far away: nothing may wait for its tick.
    rig.cfg.status_interval = Duration::from_secs(60);
    rig.cfg.linger = Duration::from_millis(5);
    let crate::replication::pgoutput::PgOutput::Relation(outbox) =
        crate::replication::pgoutput::decode(relation()).expect("a relation message")
    else {
        panic!("not a relation");
    };
    let key = rig.cfg.routes.key_for(&rig.cfg.tables[0]);
    let rows: Vec<Vec<Option<String>>> = (1..=3)
        .map(|n| {
            [
                &format!("00000000-0000-0000-0000-{n:012}"),
                "Order",
                &format!("b-{n}"),
                "OrderPlaced",
                "{}",
            ]
            .into_iter()
            .map(|v| Some(v.to_owned()))
            .collect()
        })
        .collect();
    rig.beacons
        .backfill
        .stage_chunk("run1", std::sync::Arc::new(outbox), key, rows);
    let sink = rig.sink.clone();
    let mut progress = Progress::starting_at(Lsn(0x100));
    let mut session = rig.session(&mut progress);
    let prefix = super::backfill::WATERMARK_PREFIX;
    let mut stream = Script::new(vec![
        Step::Message(wal(0x100, relation())),
        // The status timer's first (immediate) tick passes meanwhile.
        Step::Pause,
        Step::Message(message(0x200, prefix, "run1 1 low")),
        Step::Message(message(0x300, prefix, "run1 1 high")),
    ]);
    let shutdown = CancellationToken::new();
    let control = async {
        until("the chunk's load records in the sink", || {
            sink.durable().len() == 3
        })
        .await;
        shutdown.cancel();
    };
    let (result, ()) = tokio::join!(session.stream(&mut stream, &shutdown), control);
    assert!(result.is_ok(), "{result:?}");
}

#[test]
fn a_shutdown_while_the_standby_holds_the_open_batch_ends_at_its_deadline() {
    // The session runs on a thread of its own, watched from this one with a plain channel: the
    // old loop spun on an empty `inflight` without yielding, so no timer of its runtime fired.
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async {
            let mut rig = Rig::new(&[]);
            rig.cfg.shutdown_timeout = Duration::from_millis(300);
            // The standby is down: it never gets past the start.
            let (_standby, flushed) = tokio::sync::watch::channel(Lsn(0));
            rig.beacons.standby = Some(flushed);
            let sink = rig.sink.clone();
            let mut progress = Progress::starting_at(Lsn(0x100));
            let mut session = rig.session(&mut progress);
            let mut stream = script(&[(1, 0x1000)]);
            let shutdown = CancellationToken::new();
            let stop = shutdown.clone();
            let control = async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                stop.cancel();
            };
            let (result, ()) = tokio::join!(session.stream(&mut stream, &shutdown), control);
            assert!(result.is_ok(), "{result:?}");
            session.finish(&mut stream).await;
            assert!(sink.durable().is_empty(), "nothing published past the standby");
            assert!(stream.highest_status() < Lsn(0x1000), "nothing acknowledged");
        });
        let _ = done.send(());
    });
    assert!(
        finished.recv_timeout(Duration::from_secs(10)).is_ok(),
        "finish did not return within 10 s of a 300 ms shutdown timeout (or the session panicked)"
    );
}
