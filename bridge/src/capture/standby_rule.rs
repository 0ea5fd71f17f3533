//! `--synchronous-standby`'s rule: which physical standbys must have flushed a commit before
//! capture publishes it, written as PostgreSQL's `synchronous_standby_names`:
//! - `FIRST n (a, b, c)` (or `n (a, b, c)`): the first `n` connected standbys in list order;
//! - `ANY n (a, b, c)`: any `n` of them (the `n`-th furthest);
//! - `a, b`: every one named (stricter than PostgreSQL, where a bare list means `FIRST 1`: it
//!   was this flag's meaning before the other forms existed).
//!
//! `*` stands for any standby (only inside `FIRST`/`ANY`). Names match `application_name`
//! ignoring ASCII case, as PostgreSQL compares them. The server capture reads from is left out
//! of the list (its `cluster_name`): it trivially holds what it sent, and leaving it out — as
//! PostgreSQL ignores its own name — lets one string name both servers of a pair, so capture
//! fails over unattended in either direction. (Counting it as a member would let `ANY 1 (p, s)`
//! publish with no standby at all.)
//!
//! Hand-written: the grammar is six tokens; no crate parses PostgreSQL's syntax for it.

use std::fmt;
use std::str::FromStr;

use crate::lsn::Lsn;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// Every name must have flushed.
    All,
    /// The first `n` connected in list order (priority).
    First(usize),
    /// Any `n`.
    Any(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StandbyRule {
    pub method: Method,
    pub names: Vec<String>,
}

/// What the standbys allow right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Commits up to here may be published.
    Release(Lsn),
    /// Too few of the named standbys are connected: publishing waits. The sentence names them.
    Held(String),
}

#[derive(Debug, thiserror::Error)]
#[error("--synchronous-standby `{input}`: {reason} (forms: `a, b` every one named, `FIRST n (a, b)`, `ANY n (a, b)`)")]
pub struct RuleError {
    input: String,
    reason: String,
}

impl FromStr for StandbyRule {
    type Err = RuleError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason: &str| RuleError {
            input: input.to_owned(),
            reason: reason.to_owned(),
        };
        let text = input.trim();
        if text.is_empty() {
            return Err(fail("no standby named"));
        }
        let (head, list) = match text.find('(') {
            Some(open) => {
                let inner = text[open + 1..]
                    .strip_suffix(')')
                    .ok_or_else(|| fail("the list must end with `)`"))?;
                (text[..open].trim(), Some(inner))
            }
            None => ("", None),
        };
        let method = match list {
            None => Method::All,
            Some(_) => {
                let mut words = head.split_whitespace();
                let (keyword, count) = match (words.next(), words.next(), words.next()) {
                    (Some(n), None, None) if n.chars().all(|c| c.is_ascii_digit()) => ("first", n),
                    (Some(k), Some(n), None) => (k, n),
                    _ => return Err(fail("expected `FIRST n` or `ANY n` before `(`")),
                };
                let n: usize = count
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| fail("the number of standbys must be a whole number from 1"))?;
                match keyword.to_ascii_lowercase().as_str() {
                    "first" => Method::First(n),
                    "any" => Method::Any(n),
                    _ => return Err(fail("expected `FIRST` or `ANY`")),
                }
            }
        };
        let names = split_names(list.unwrap_or(text)).map_err(|r| fail(&r))?;
        let wildcard = names.iter().any(|n| n == "*");
        match method {
            Method::All if wildcard => Err(fail("`*` needs `FIRST n (…)` or `ANY n (…)`")),
            Method::First(n) | Method::Any(n) if !wildcard && n > names.len() => {
                Err(fail("it asks for more standbys than it names"))
            }
            _ => Ok(StandbyRule { method, names }),
        }
    }
}

/// The comma-separated names, each an identifier, a `"quoted name"` or `*`.
fn split_names(list: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for part in list.split(',') {
        let part = part.trim();
        let name = match part.strip_prefix('"') {
            Some(rest) => rest
                .strip_suffix('"')
                .ok_or_else(|| format!("unterminated quoted name `{part}`"))?
                .replace("\"\"", "\""),
            None if part.is_empty() => return Err("an empty name".to_owned()),
            None if part.contains(|c: char| c.is_whitespace() || "()\"".contains(c)) => {
                return Err(format!("`{part}` is not a name (quote it)"))
            }
            None => part.to_owned(),
        };
        names.push(name);
    }
    Ok(names)
}

impl fmt::Display for StandbyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = self.names.join(", ");
        match self.method {
            Method::All => write!(f, "{list}"),
            Method::First(n) => write!(f, "FIRST {n} ({list})"),
            Method::Any(n) => write!(f, "ANY {n} ({list})"),
        }
    }
}

impl StandbyRule {
    /// The verdict from `pg_stat_replication`'s `(application_name, flush_lsn)` rows of the
    /// server capture reads from, whose `cluster_name` is `this_server`.
    pub fn judge(&self, this_server: Option<&str>, connected: &[(String, Lsn)]) -> Verdict {
        let this = this_server.filter(|s| !s.is_empty());
        let is_this = |name: &str| this.is_some_and(|t| t.eq_ignore_ascii_case(name));
        // Several entries under one name (a standby reconnecting): the furthest counts.
        let mut furthest: Vec<(&str, Lsn)> = Vec::new();
        for (name, lsn) in connected.iter().filter(|(n, _)| !is_this(n)) {
            match furthest.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                Some(entry) => entry.1 = entry.1.max(*lsn),
                None => furthest.push((name, *lsn)),
            }
        }
        let wanted: Vec<&str> = self
            .names
            .iter()
            .map(String::as_str)
            .filter(|n| !is_this(n))
            .collect();
        let priority = |name: &str| {
            wanted
                .iter()
                .position(|w| *w == "*" || w.eq_ignore_ascii_case(name))
        };
        let held = |needed: usize, have: usize| {
            Verdict::Held(format!(
                "waiting for {} (--synchronous-standby {self}{}): {have} of {needed} connected",
                waiting_for(&wanted, &furthest),
                this.map(|t| format!(", this server `{t}` left out"))
                    .unwrap_or_default(),
            ))
        };
        match self.method {
            Method::All => {
                let mut lowest = Lsn(u64::MAX);
                for name in &wanted {
                    match furthest.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)) {
                        Some((_, lsn)) => lowest = lowest.min(*lsn),
                        None => {
                            let have = wanted
                                .iter()
                                .filter(|w| furthest.iter().any(|(n, _)| n.eq_ignore_ascii_case(w)))
                                .count();
                            return held(wanted.len(), have);
                        }
                    }
                }
                Verdict::Release(lowest)
            }
            Method::First(n) => {
                let mut candidates: Vec<(usize, Lsn)> = furthest
                    .iter()
                    .filter_map(|(name, lsn)| Some((priority(name)?, *lsn)))
                    .collect();
                candidates.sort_by_key(|(p, _)| *p);
                if candidates.len() < n {
                    return held(n, candidates.len());
                }
                Verdict::Release(candidates[..n].iter().map(|(_, l)| *l).min().unwrap_or_default())
            }
            Method::Any(n) => {
                let mut flushed: Vec<Lsn> = furthest
                    .iter()
                    .filter(|(name, _)| priority(name).is_some())
                    .map(|(_, l)| *l)
                    .collect();
                if flushed.len() < n {
                    return held(n, flushed.len());
                }
                flushed.sort_unstable_by(|a, b| b.cmp(a));
                Verdict::Release(flushed[n - 1])
            }
        }
    }
}

/// The named standbys that are not connected, as a sentence part.
fn waiting_for(wanted: &[&str], connected: &[(&str, Lsn)]) -> String {
    let missing: Vec<String> = wanted
        .iter()
        .filter(|w| **w != "*" && !connected.iter().any(|(n, _)| n.eq_ignore_ascii_case(w)))
        .map(|w| format!("`{w}`"))
        .collect();
    match missing.len() {
        0 => "any other standby".to_owned(),
        1 => format!("standby {}", missing[0]),
        _ => format!("standbys {}", missing.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> StandbyRule {
        match s.parse() {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    fn at(rows: &[(&str, u64)]) -> Vec<(String, Lsn)> {
        rows.iter().map(|(n, l)| ((*n).to_owned(), Lsn(*l))).collect()
    }

    #[test]
    fn every_form_of_postgres_parses() {
        assert_eq!(rule("a").method, Method::All);
        assert_eq!(rule("a, b").names, ["a", "b"]);
        assert_eq!(rule("FIRST 2 (a, b, c)").method, Method::First(2));
        assert_eq!(rule("first 1 (a,b)").method, Method::First(1));
        assert_eq!(rule("2 (a, b)").method, Method::First(2));
        assert_eq!(rule(" ANY 1 ( a , \"B c\" ) ").names, ["a", "B c"]);
        assert_eq!(rule("ANY 1 (*)").method, Method::Any(1));
        assert_eq!(rule("ANY 2 (a, b)").to_string(), "ANY 2 (a, b)");
    }

    #[test]
    fn a_malformed_rule_is_refused_with_its_reason() {
        for (input, reason) in [
            ("", "no standby named"),
            ("a,,b", "an empty name"),
            ("ANY 3 (a, b)", "more standbys than it names"),
            ("ANY 0 (a)", "from 1"),
            ("SOME 1 (a)", "`FIRST` or `ANY`"),
            ("ANY 1 (a", "end with `)`"),
            ("*", "`*` needs"),
            ("a b", "not a name"),
            ("ANY 1 (\"a)", "unterminated"),
        ] {
            match input.parse::<StandbyRule>() {
                Ok(r) => panic!("`{input}` parsed as {r:?}"),
                Err(e) => assert!(e.to_string().contains(reason), "`{input}`: {e}"),
            }
        }
    }

    #[test]
    fn a_plain_list_waits_for_every_one_named() {
        let r = rule("a, b");
        assert_eq!(
            r.judge(None, &at(&[("a", 5), ("b", 3)])),
            Verdict::Release(Lsn(3))
        );
        let Verdict::Held(why) = r.judge(None, &at(&[("a", 5)])) else {
            panic!("released without b")
        };
        assert!(why.contains("standby `b`") && why.contains("1 of 2"), "{why}");
        // A reconnecting standby shows twice: its furthest entry counts.
        assert_eq!(
            r.judge(None, &at(&[("a", 5), ("b", 1), ("B", 4)])),
            Verdict::Release(Lsn(4))
        );
    }

    #[test]
    fn first_n_takes_the_connected_standbys_in_list_order() {
        let r = rule("FIRST 1 (a, b)");
        assert_eq!(
            r.judge(None, &at(&[("a", 2), ("b", 9)])),
            Verdict::Release(Lsn(2))
        );
        assert_eq!(r.judge(None, &at(&[("b", 9)])), Verdict::Release(Lsn(9)));
        let r = rule("FIRST 2 (a, b, c)");
        assert_eq!(
            r.judge(None, &at(&[("c", 1), ("b", 7), ("x", 0)])),
            Verdict::Release(Lsn(1))
        );
        assert!(matches!(r.judge(None, &at(&[("c", 1)])), Verdict::Held(_)));
    }

    #[test]
    fn any_n_takes_the_nth_furthest() {
        let r = rule("ANY 2 (a, b, c)");
        assert_eq!(
            r.judge(None, &at(&[("a", 2), ("b", 9), ("c", 5)])),
            Verdict::Release(Lsn(5))
        );
        assert!(matches!(
            r.judge(None, &at(&[("a", 2), ("z", 9)])),
            Verdict::Held(_)
        ));
        assert_eq!(
            rule("ANY 1 (*)").judge(None, &at(&[("z", 4)])),
            Verdict::Release(Lsn(4))
        );
    }

    #[test]
    fn the_server_capture_reads_from_is_left_out() {
        // A pair named both ways: on `p` capture waits for `s`, after a failover on `s` for `p`.
        let r = rule("ANY 1 (p, s)");
        assert_eq!(r.judge(Some("p"), &at(&[("s", 3)])), Verdict::Release(Lsn(3)));
        let Verdict::Held(why) = r.judge(Some("s"), &at(&[])) else {
            panic!("published with no standby")
        };
        assert!(
            why.contains("standby `p`") && why.contains("`s` left out"),
            "{why}"
        );
        assert_eq!(r.judge(Some("s"), &at(&[("p", 8)])), Verdict::Release(Lsn(8)));
        // A plain list naming only this server waits for nothing.
        assert_eq!(
            rule("p").judge(Some("P"), &at(&[])),
            Verdict::Release(Lsn(u64::MAX))
        );
        assert_eq!(
            rule("p, s").judge(Some("s"), &at(&[("p", 6)])),
            Verdict::Release(Lsn(6))
        );
    }
}
