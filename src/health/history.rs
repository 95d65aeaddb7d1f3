//! Reads of what health has recorded, for the Integrations pages: one monitor's hour and day
//! rollups and its raw results, and the error log of failed checks across every monitor. It
//! only reads the tables `store` owns; nothing here writes, and the live grid stays in `grid`.
//! Lists page backwards with a cursor (the last row's time, plus the monitor id where several
//! monitors share a time), so a deep page costs what the first does.

use super::HealthError;
use super::store::BUCKETS;
use crate::args;
use crate::store::Store;

type Result<T, E = HealthError> = std::result::Result<T, E>;

/// One hour or day of a monitor's checks.
#[derive(Debug, Clone)]
pub struct Rollup {
    /// Start of the hour or day, UTC ms.
    pub bucket: i64,
    pub checks: i64,
    pub up: i64,
    pub degraded: i64,
    pub down: i64,
    pub latency_sum_us: i64,
    pub histogram: [i64; BUCKETS],
}

impl Rollup {
    /// Share of checks that passed (up or degraded), 0..1.
    pub fn uptime(&self) -> Option<f64> {
        (self.checks > 0).then(|| (self.checks - self.down) as f64 / self.checks as f64)
    }

    pub fn mean_latency_ms(&self) -> Option<f64> {
        (self.checks > 0).then(|| self.latency_sum_us as f64 / self.checks as f64 / 1000.0)
    }

    pub fn p95_ms(&self) -> Option<f64> {
        super::store::quantile(&self.histogram, 0.95)
    }
}

/// Monitor `id`'s rollups of `granularity` (`hour` or `day`) starting at or after `from`,
/// oldest first.
pub async fn rollups(store: &Store, id: i64, granularity: &str, from: i64) -> Result<Vec<Rollup>> {
    let histogram: String = (0..BUCKETS).map(|i| format!(", b{i}")).collect();
    Ok(store
        .fetch_all_assembled(
            format!(
                "SELECT bucket, checks, up, degraded, down, latency_sum_us{histogram} \
                 FROM check_rollups WHERE monitor_id = $1 AND granularity = $2 AND bucket >= $3 \
                 ORDER BY bucket"
            ),
            args![id, granularity, from],
        )
        .await?)
}

impl<'r, R: sqlx::Row> sqlx::FromRow<'r, R> for Rollup
where
    usize: sqlx::ColumnIndex<R>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    fn from_row(row: &'r R) -> Result<Self, sqlx::Error> {
        let mut histogram = [0; BUCKETS];
        for (i, slot) in histogram.iter_mut().enumerate() {
            *slot = row.try_get(6 + i)?;
        }
        Ok(Rollup {
            bucket: row.try_get(0)?,
            checks: row.try_get(1)?,
            up: row.try_get(2)?,
            degraded: row.try_get(3)?,
            down: row.try_get(4)?,
            latency_sum_us: row.try_get(5)?,
            histogram,
        })
    }
}

/// One stored check of a monitor.
#[derive(Debug, Clone)]
pub struct Check {
    pub at: i64,
    /// `up`, `degraded` or `down`.
    pub verdict: String,
    pub latency_us: i64,
    pub status: Option<i64>,
    /// The reason anyone who may read the monitor sees.
    pub error: Option<String>,
    /// Rate-limit and quota headers as `[[name, value], …]` (JSON text).
    pub headers: Option<String>,
    /// The reason with what the peer said, for administrators ([`Check::reveal`]).
    pub error_detail: Option<String>,
}
crate::from_row!(Check {
    at,
    verdict,
    latency_us,
    status,
    error,
    headers,
    error_detail
});

impl Check {
    /// Shows an administrator what the peer said: the error becomes its detail, where one
    /// was kept. Everyone else is shown `error` as it is.
    pub fn reveal(&mut self) {
        if let Some(detail) = self.error_detail.take() {
            self.error = Some(detail);
        }
    }

    /// The recorded rate-limit and quota headers as `name: value` pairs.
    pub fn header_pairs(&self) -> Vec<(String, String)> {
        self.headers
            .as_deref()
            .and_then(|h| serde_json::from_str(h).ok())
            .unwrap_or_default()
    }
}

/// Monitor `id`'s checks before `before` (UTC ms), newest first.
pub async fn checks(store: &Store, id: i64, before: i64, limit: i64) -> Result<Vec<Check>> {
    Ok(store
        .fetch_all(
            "SELECT at, verdict, latency_us, status, error, headers, error_detail \
             FROM check_results WHERE monitor_id = $1 AND at < $2 ORDER BY at DESC LIMIT $3",
            args![id, before, limit],
        )
        .await?)
}

/// A stretch of consecutive checks with the same verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub verdict: String,
    /// First and last check of the stretch, UTC ms.
    pub from: i64,
    pub to: i64,
    pub checks: usize,
}

/// Verdict changes in `checks` (newest first, as [`checks`] returns them), newest first.
pub fn runs(checks: &[Check]) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for c in checks.iter().rev() {
        match out.last_mut() {
            Some(run) if run.verdict == c.verdict => {
                run.to = c.at;
                run.checks += 1;
            }
            _ => out.push(Run {
                verdict: c.verdict.clone(),
                from: c.at,
                to: c.at,
                checks: 1,
            }),
        }
    }
    out.reverse();
    out
}

/// A failed (down) or degraded check in the error log.
#[derive(Debug, Clone)]
pub struct Failure {
    pub monitor_id: i64,
    pub name: String,
    pub at: i64,
    /// `down` or `degraded`.
    pub verdict: String,
    pub latency_us: i64,
    pub status: Option<i64>,
    /// The reason anyone who may read the monitor sees.
    pub error: Option<String>,
    /// The reason with what the peer said, for administrators ([`Failure::reveal`]).
    pub error_detail: Option<String>,
}
crate::from_row!(Failure {
    monitor_id,
    name,
    at,
    verdict,
    latency_us,
    status,
    error,
    error_detail
});

impl Failure {
    /// Shows an administrator what the peer said, as [`Check::reveal`] does.
    pub fn reveal(&mut self) {
        if let Some(detail) = self.error_detail.take() {
            self.error = Some(detail);
        }
    }
}

/// Where a page of the error log ends: the last row's time and monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: i64,
    pub monitor_id: i64,
}

impl Cursor {
    /// `at.monitor_id`, as it travels in a link.
    pub fn parse(text: &str) -> Option<Self> {
        let (at, id) = text.split_once('.')?;
        Some(Cursor {
            at: at.parse().ok()?,
            monitor_id: id.parse().ok()?,
        })
    }

    pub fn of(f: &Failure) -> Self {
        Cursor {
            at: f.at,
            monitor_id: f.monitor_id,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.at, self.monitor_id)
    }
}

/// Failed (`down`) and `degraded` checks, newest first: of every monitor, or of monitor `only`,
/// after the page that ended at `before`.
pub async fn failures(
    store: &Store,
    only: Option<i64>,
    before: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Failure>> {
    let before = before.unwrap_or(Cursor {
        at: i64::MAX,
        monitor_id: i64::MAX,
    });
    // `at <= $1` bounds the index range; the tie on `at` is settled by the monitor id.
    let rows = match only {
        None => store
            .fetch_all(
                "SELECT r.monitor_id, m.name, r.at, r.verdict, r.latency_us, r.status, r.error, \
                     r.error_detail FROM check_results r JOIN monitors m ON m.id = r.monitor_id \
                     WHERE r.verdict <> 'up' AND r.at <= $1 \
                     AND (r.at < $1 OR r.monitor_id < $2) \
                     ORDER BY r.at DESC, r.monitor_id DESC LIMIT $3",
                args![before.at, before.monitor_id, limit],
            )
            .await?,
        Some(id) => store
            .fetch_all(
                "SELECT r.monitor_id, m.name, r.at, r.verdict, r.latency_us, r.status, r.error, \
                     r.error_detail FROM check_results r JOIN monitors m ON m.id = r.monitor_id \
                     WHERE r.monitor_id = $1 AND r.verdict <> 'up' AND r.at < $2 \
                     ORDER BY r.at DESC LIMIT $3",
                args![id, before.at, limit],
            )
            .await?,
    };
    Ok(rows)
}

/// A stretch of degraded or down checks with no passing check between them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    /// The first degraded or down check, UTC ms.
    pub start: i64,
    /// The first `up` check after it; `None` while it goes on.
    pub end: Option<i64>,
    /// `down` if any check of the stretch was down, else `degraded`.
    pub worst: String,
    pub checks: usize,
    /// The stretch began before the oldest check read, so `start` is later than the truth.
    pub cut: bool,
}

impl Incident {
    /// How long it lasted, or has lasted by `now`, in ms.
    pub fn duration(&self, now: i64) -> i64 {
        self.end.unwrap_or(now).max(self.start) - self.start
    }
}

/// A degraded or down check and when the monitor's next check (of any verdict) ran.
#[derive(Debug, Clone)]
pub struct ProblemCheck {
    pub at: i64,
    pub verdict: String,
    pub next_at: Option<i64>,
}
crate::from_row!(ProblemCheck {
    at,
    verdict,
    next_at
});

/// Incidents among `checks` (any order), newest first. Two problem checks belong to one
/// incident when the first one's next check is the second; otherwise a passing check ran
/// between them, and that check is where the first incident ended. `complete` says whether
/// `checks` holds every problem check since the window began; when it does not, the oldest
/// incident may have begun earlier.
pub fn incidents(checks: &[ProblemCheck], complete: bool) -> Vec<Incident> {
    let mut sorted: Vec<&ProblemCheck> = checks.iter().collect();
    sorted.sort_by_key(|c| c.at);
    let mut out: Vec<Incident> = Vec::new();
    let mut last_next: Option<i64> = None;
    for c in sorted {
        let continues = !out.is_empty() && last_next == Some(c.at);
        if !continues {
            out.push(Incident {
                start: c.at,
                end: None,
                worst: c.verdict.clone(),
                checks: 0,
                cut: out.is_empty() && !complete,
            });
        }
        if let Some(i) = out.last_mut() {
            i.checks += 1;
            if c.verdict == "down" {
                i.worst = "down".into();
            }
            i.end = c.next_at;
        }
        last_next = c.next_at;
    }
    out.reverse();
    out
}

/// Mean time to recovery, in ms: the mean duration of the incidents that ended.
pub fn mttr(incidents: &[Incident]) -> Option<i64> {
    let ended: Vec<i64> = incidents
        .iter()
        .filter(|i| i.end.is_some() && !i.cut)
        .map(|i| i.duration(0))
        .collect();
    (!ended.is_empty()).then(|| ended.iter().sum::<i64>() / ended.len() as i64)
}

/// Monitor `id`'s incidents since `from` (UTC ms), newest first, read from at most `limit`
/// problem checks. Each problem check comes with its monitor's next check, one seek on the
/// results' primary key, so the cost follows the number of problem checks, never the
/// number of passing ones.
pub async fn monitor_incidents(
    store: &Store,
    id: i64,
    from: i64,
    limit: i64,
) -> Result<Vec<Incident>> {
    let rows: Vec<ProblemCheck> = store
        .fetch_all(
            "SELECT f.at, f.verdict, (SELECT n.at FROM check_results n \
             WHERE n.monitor_id = $1 AND n.at > f.at ORDER BY n.at LIMIT 1) AS next_at \
             FROM check_results f WHERE f.monitor_id = $1 AND f.verdict <> 'up' AND f.at >= $2 \
             ORDER BY f.at DESC LIMIT $3",
            args![id, from, limit],
        )
        .await?;
    let complete = (rows.len() as i64) < limit;
    Ok(incidents(&rows, complete))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(at: i64, verdict: &str) -> Check {
        Check {
            at,
            verdict: verdict.into(),
            latency_us: 1,
            status: None,
            error: None,
            headers: None,
            error_detail: None,
        }
    }

    #[test]
    fn runs_group_consecutive_verdicts_newest_first() {
        let newest_first = [
            check(5, "up"),
            check(4, "down"),
            check(3, "down"),
            check(2, "up"),
            check(1, "up"),
        ];
        let r = runs(&newest_first);
        let summary: Vec<(&str, i64, i64, usize)> = r
            .iter()
            .map(|r| (r.verdict.as_str(), r.from, r.to, r.checks))
            .collect();
        assert_eq!(
            summary,
            [("up", 5, 5, 1), ("down", 3, 4, 2), ("up", 1, 2, 2)]
        );
        assert!(runs(&[]).is_empty());
    }

    fn problem(at: i64, verdict: &str, next_at: Option<i64>) -> ProblemCheck {
        ProblemCheck {
            at,
            verdict: verdict.into(),
            next_at,
        }
    }

    #[test]
    fn incidents_split_at_passing_checks_and_the_last_may_go_on() {
        // Checks every 10: 10 degraded, 20 down, 30 up; 50 down, 60 (up); 80 degraded, ongoing.
        let rows = [
            problem(80, "degraded", None),
            problem(50, "down", Some(60)),
            problem(20, "down", Some(30)),
            problem(10, "degraded", Some(20)),
        ];
        let got = incidents(&rows, true);
        let summary: Vec<(i64, Option<i64>, &str, usize)> = got
            .iter()
            .map(|i| (i.start, i.end, i.worst.as_str(), i.checks))
            .collect();
        assert_eq!(
            summary,
            [
                (80, None, "degraded", 1),
                (50, Some(60), "down", 1),
                (10, Some(30), "down", 2)
            ]
        );
        assert_eq!(got[0].duration(100), 20);
        assert_eq!(got[2].duration(100), 20);
        // Two ended incidents of 10 and 20.
        assert_eq!(mttr(&got), Some(15));
        assert!(incidents(&[], true).is_empty());
        assert_eq!(mttr(&[]), None);
        // A window that did not hold every problem check: the oldest may have begun earlier
        // and stays out of the mean.
        let cut = incidents(&rows[..2], false);
        assert!(cut[1].cut && !cut[0].cut);
        assert_eq!(mttr(&cut), None);
    }

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let c = Cursor {
            at: 1_700_000_000_000,
            monitor_id: 42,
        };
        assert_eq!(Cursor::parse(&c.to_string()), Some(c));
        for bad in ["", "12", "a.b", "1.", ".2", "1.2.3"] {
            assert_eq!(Cursor::parse(bad), None, "{bad:?}");
        }
    }
}
