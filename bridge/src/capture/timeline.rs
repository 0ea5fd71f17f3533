//! A server on another timeline than the one capture acknowledged on (a promoted standby that
//! already holds the slot: a synchronized failover slot on 17+, or a copied or permanent slot).
//!
//! Positions on two timelines agree only up to the switch point, where the new timeline forked
//! from the old. What capture acknowledged past it happened on the old timeline alone: the new
//! one has other commits at those positions, which starting there would skip. So capture starts
//! from the new server's own slot, and what it delivered past the switch point is reported as
//! possible phantoms (records of commits the failover took back).

use crate::lsn::Lsn;
use crate::replication::{ReplicationConnection, ReplicationError};

/// Where timeline `old` ended in the history of timeline `new`, read with `TIMELINE_HISTORY`;
/// `None` when `old` is not an ancestor of `new` (then nothing of ours is known to be shared).
pub async fn switch_point(
    conn: &mut ReplicationConnection,
    old: u32,
    new: u32,
) -> Result<Option<Lsn>, ReplicationError> {
    if new <= 1 || old >= new {
        return Ok(None);
    }
    let rows = conn.simple_query(&format!("TIMELINE_HISTORY {new}")).await?;
    let content = rows
        .first()
        .and_then(|row| row.get(1).cloned().flatten())
        .unwrap_or_default();
    Ok(switch_in_history(&content, old))
}

/// The switch point of timeline `old` in a timeline history file's text: lines of
/// `<parent timeline>\t<switch LSN>\t<reason>`.
fn switch_in_history(history: &str, old: u32) -> Option<Lsn> {
    history.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let tli: u32 = fields.next()?.parse().ok()?;
        (tli == old).then(|| fields.next()?.parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_point_of_an_ancestor_is_read_from_the_history() {
        let history =
            "1\t0/3000158\tno recovery target specified\n\n2\t0/5000A28\tno recovery target specified\n";
        assert_eq!(switch_in_history(history, 1), Some(Lsn(0x300_0158)));
        assert_eq!(switch_in_history(history, 2), Some(Lsn(0x500_0A28)));
        assert_eq!(switch_in_history(history, 3), None);
        assert_eq!(switch_in_history("", 1), None);
        assert_eq!(switch_in_history("# comment\n1\tnot-an-lsn\tx", 1), None);
    }
}
