//! A Postgres MVCC snapshot (`pg_current_snapshot()`), asked which decoded transactions it shows.
//!
//! pgoutput names a transaction by its 32-bit xid; `pg_current_snapshot()` gives 64-bit xid8s
//! (epoch above the xid). The low 32 bits of an xid8 are the xid, and xids within one snapshot's
//! reach are less than 2^31 apart, so they compare modulo 2^32 as Postgres itself does
//! (`TransactionIdPrecedes`).

use std::collections::HashSet;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Every transaction before it had ended when the snapshot was taken.
    pub xmin: u32,
    /// No transaction from it on had ended.
    pub xmax: u32,
    /// Between the two: those still running (not shown).
    pub xip: HashSet<u32>,
}

impl Snapshot {
    /// Reads `pg_current_snapshot()::text`: `xmin:xmax:xip,xip,…`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.trim().split(':');
        let low = |s: &str| s.parse::<u64>().ok().map(|x| x as u32);
        let xmin = low(parts.next()?)?;
        let xmax = low(parts.next()?)?;
        let xip = match parts.next()? {
            "" => HashSet::new(),
            list => list.split(',').map(low).collect::<Option<_>>()?,
        };
        parts.next().is_none().then_some(Self { xmin, xmax, xip })
    }

    /// Whether a *committed* transaction's changes are visible in this snapshot. Once one
    /// snapshot shows it, every later one does too.
    pub fn shows(&self, xid: u32) -> bool {
        precedes(xid, self.xmax) && !self.xip.contains(&xid)
    }
}

/// `a` is older than `b` (modulo 2^32).
pub fn precedes(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_postgres_text_and_tells_what_it_shows() {
        let s = Snapshot::parse("740:745:740,742").unwrap();
        assert_eq!((s.xmin, s.xmax), (740, 745));
        assert!(s.shows(739) && s.shows(741) && s.shows(744));
        assert!(!s.shows(740) && !s.shows(742), "running at the time");
        assert!(!s.shows(745) && !s.shows(900), "not yet ended");
        let empty = Snapshot::parse("800:800:").unwrap();
        assert!(empty.shows(799) && !empty.shows(800));
        assert_eq!(Snapshot::parse("1:2"), None);
        assert_eq!(Snapshot::parse("a:2:"), None);
    }

    #[test]
    fn compares_across_epochs_and_wraparound() {
        // Epoch 3, xids just past a wraparound of the 32-bit counter.
        let epoch = 3_u64 << 32;
        let text = format!("{}:{}:{}", epoch - 5, epoch + 10, epoch + 2);
        let s = Snapshot::parse(&text).unwrap();
        assert!(s.shows(u32::MAX - 10), "before the wrap: older");
        assert!(s.shows(1));
        assert!(!s.shows(2), "running");
        assert!(!s.shows(10) && !s.shows(11));
    }
}
