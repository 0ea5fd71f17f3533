//! Log sequence numbers: Postgres' WAL positions, shown as `X/Y` like Postgres does.

use std::fmt;
use std::str::FromStr;

/// A WAL position. Ordered, so acknowledgements can be checked to only move forward.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{0}` is not an LSN (expected the form 16/B374D848)")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_owned());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_postgres_notation() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn.0, 0x16_B374_D848);
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
    }

    /// tokio-postgres' own `PgLsn` (what its query API returns) reads and writes LSNs the
    /// same way: the two can stand in for each other at the boundary.
    #[test]
    fn agrees_with_tokio_postgres_pg_lsn() {
        use tokio_postgres::types::PgLsn;
        for text in ["0/0", "0/1", "16/B374D848", "FFFFFFFF/FFFFFFFF", "1/0", "a/b"] {
            let ours: Result<Lsn, _> = text.parse();
            let theirs: Result<PgLsn, _> = text.parse();
            assert_eq!(ours.is_ok(), theirs.is_ok(), "{text}");
            if let (Ok(ours), Ok(theirs)) = (ours, theirs) {
                assert_eq!(ours.0, u64::from(theirs), "{text}");
                assert_eq!(ours.to_string(), theirs.to_string(), "{text}");
            }
        }
        for bad in ["", "1", "/1", "1/", "g/1", "1/2/3"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad}");
            assert!(bad.parse::<PgLsn>().is_err(), "{bad} (tokio-postgres)");
        }
        // Stricter than PgLsn where Postgres is: each half is at most 32 bits (pg_lsn refuses
        // more; PgLsn shifts the excess away).
        assert!("100000000/0".parse::<Lsn>().is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("x/1".parse::<Lsn>().is_err());
    }
}
