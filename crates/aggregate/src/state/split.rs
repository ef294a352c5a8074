//! Aggregates by period: which periods hold data, and moving some of them out. Streaming
//! workers release closed periods while later ones are still counted.

use std::collections::{BTreeMap, BTreeSet};

use logcensus_policy::{CrawlerHandling, Period};

use super::Aggregates;

/// Moves the entries of `from` whose period `keep` refuses into `into`.
fn split_off<V>(
    from: &mut BTreeMap<i64, V>,
    into: &mut BTreeMap<i64, V>,
    keep: &impl Fn(i64) -> bool,
) {
    let (kept, moved) = std::mem::take(from)
        .into_iter()
        .partition(|(p, _)| keep(*p));
    *from = kept;
    *into = moved;
}

impl Aggregates {
    /// The period length these aggregates count by.
    pub fn period(&self) -> Period {
        self.period
    }

    /// How these aggregates treat crawlers.
    pub fn crawlers(&self) -> CrawlerHandling {
        self.crawlers
    }

    /// Every period with any data (a request, a rejection or a row), sorted.
    pub fn periods(&self) -> Vec<i64> {
        let mut out: BTreeSet<i64> = self.quality.keys().copied().collect();
        out.extend(
            self.traffic
                .iter()
                .filter(|(_, m)| !m.is_empty())
                .map(|(p, _)| *p),
        );
        out.extend(
            self.clients
                .iter()
                .filter(|(_, m)| !m.is_empty())
                .map(|(p, _)| *p),
        );
        out.extend(
            self.referrers
                .iter()
                .filter(|(_, m)| !m.is_empty())
                .map(|(p, _)| *p),
        );
        out.into_iter().collect()
    }

    /// True when there is nothing to count: no period has data and no rejection waits for one.
    pub fn is_empty(&self) -> bool {
        self.quality.is_empty()
            && self.traffic.values().all(|m| m.is_empty())
            && self.clients.values().all(|m| m.is_empty())
            && self.referrers.values().all(|m| m.is_empty())
            && self.unattributed() == 0
    }

    /// Moves every period for which `keep` is false into the returned aggregates (same period
    /// length and crawler handling), keeping the others. The rejections that belong to no
    /// period yet (see [`Aggregates::unattributed`]) and the current batch's position stay
    /// here: they are counted once, wherever this aggregate goes; place them first with
    /// [`Aggregates::place_unattributed`] to send them elsewhere.
    pub fn split_periods(&mut self, keep: impl Fn(i64) -> bool) -> Aggregates {
        let mut out = Aggregates::new(self.period, self.crawlers);
        split_off(&mut self.traffic, &mut out.traffic, &keep);
        split_off(&mut self.clients, &mut out.clients, &keep);
        split_off(&mut self.referrers, &mut out.referrers, &keep);
        split_off(&mut self.quality, &mut out.quality, &keep);
        out
    }

    /// Counts the rejections that belong to no period yet (those of batches with no parsed
    /// line, and those waiting for the current batch's first parsed line) in the period holding
    /// `time` (Unix seconds). [`Aggregates::finish`] does the same with the last period; a
    /// streaming worker has no last period, so it names one.
    pub fn place_unattributed(&mut self, time: i64) {
        if self.unattributed() == 0 {
            return;
        }
        let q = self.quality.entry(self.period.start(time)).or_default();
        let pending = std::mem::take(&mut self.pending);
        let unattributed = std::mem::take(&mut self.unattributed);
        for (i, (a, b)) in pending.into_iter().zip(unattributed).enumerate() {
            q.rejected[i] += a + b;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use logcensus_enrich::{ClientClass, Place};
    use logcensus_policy::TableName;

    use super::*;
    use crate::{Column, Observation, Origin, Rejection};

    const HOUR: i64 = 3600;
    const T0: i64 = 1_431_820_800; // 2015-05-17T00:00:00Z

    fn feed(a: &mut Aggregates, hours: &[i64]) {
        let place = Arc::new(Place {
            continent: Some("EU".into()),
            country: Some("DE".into()),
            region: None,
        });
        let client = Arc::new(ClientClass {
            device: "pc".into(),
            os: "Linux".into(),
            os_version: None,
            browser: "Firefox".into(),
            browser_version: None,
            crawler: false,
            unknown: false,
            empty: false,
        });
        for (i, h) in hours.iter().enumerate() {
            a.observe(&Observation {
                time: T0 + h * HOUR + 5,
                visitor: i as u64 + 1,
                origin: Origin::Place(&place, true),
                client: &client,
                referrer: &Arc::from("(direct)"),
                status: Some(200),
                bytes: 10,
            });
        }
    }

    fn requests_by_period(a: Aggregates) -> Vec<(i64, i64)> {
        let t = a.finish(&[TableName::TrafficByRegion]);
        let (Column::Timestamp(p), Column::Int(r)) = (&t[0].columns[0].1, &t[0].columns[4].1)
        else {
            panic!("unexpected columns");
        };
        p.iter().copied().zip(r.iter().copied()).collect()
    }

    #[test]
    fn periods_lists_every_period_with_data_sorted() {
        let mut a = Aggregates::new(Period::Hour, CrawlerHandling::Exclude);
        assert!(a.is_empty());
        assert_eq!(a.periods(), Vec::<i64>::new());
        feed(&mut a, &[3, 1, 3]);
        // A rejection with a hint creates a period with no request.
        a.reject(Rejection::LineTooLong, Some(T0 + 7 * HOUR));
        assert!(!a.is_empty());
        assert_eq!(a.periods(), [T0 + HOUR, T0 + 3 * HOUR, T0 + 7 * HOUR]);
    }

    #[test]
    fn unattributed_rejections_alone_are_not_empty() {
        let mut a = Aggregates::new(Period::Hour, CrawlerHandling::Exclude);
        a.reject(Rejection::Truncated, None);
        assert!(!a.is_empty());
        a.end_batch();
        assert!(!a.is_empty());
        assert!(a.periods().is_empty());
    }

    #[test]
    fn split_moves_refused_periods_and_keeps_the_rest() {
        let mut a = Aggregates::new(Period::Hour, CrawlerHandling::Exclude);
        feed(&mut a, &[0, 1, 1, 2, 5]);
        a.end_batch();
        a.reject(Rejection::Truncated, None); // a batch with no parsed line
        a.end_batch();
        let moved = a.split_periods(|p| p >= T0 + 2 * HOUR);
        assert_eq!(moved.periods(), [T0, T0 + HOUR]);
        assert_eq!(a.periods(), [T0 + 2 * HOUR, T0 + 5 * HOUR]);
        assert_eq!(moved.requests(), 3);
        assert_eq!(a.requests(), 2);
        // The unattributed rejection stays, moved aggregates have none.
        assert_eq!(a.unattributed(), 1);
        assert_eq!(moved.unattributed(), 0);
        assert_eq!(moved.period(), Period::Hour);
        assert_eq!(moved.crawlers(), CrawlerHandling::Exclude);
        assert_eq!(requests_by_period(moved), [(T0, 1), (T0 + HOUR, 2)]);
        assert_eq!(
            requests_by_period(a),
            [(T0 + 2 * HOUR, 1), (T0 + 5 * HOUR, 1)]
        );
    }

    #[test]
    fn split_then_merge_is_the_whole() {
        let mut whole = Aggregates::new(Period::Hour, CrawlerHandling::Exclude);
        feed(&mut whole, &[0, 1, 1, 2, 5]);
        let mut part = whole.clone();
        let moved = part.split_periods(|p| p == T0 + HOUR);
        part.merge(moved);
        assert_eq!(part.finish(&TableName::ALL), whole.finish(&TableName::ALL));
    }

    #[test]
    fn place_unattributed_counts_them_in_the_named_period() {
        let mut a = Aggregates::new(Period::Hour, CrawlerHandling::Exclude);
        a.reject(Rejection::Truncated, None);
        a.end_batch();
        a.reject(Rejection::InvalidUtf8, None); // pending: the batch has no parsed line yet
        assert_eq!(a.unattributed(), 2);
        a.place_unattributed(T0 + 4 * HOUR + 59);
        assert_eq!(a.unattributed(), 0);
        assert_eq!(a.periods(), [T0 + 4 * HOUR]);
        let t = a.finish(&[TableName::TrafficQuality]);
        let Column::Int(rejected) = &t[0]
            .columns
            .iter()
            .find(|(n, _)| *n == "rejected_lines")
            .unwrap()
            .1
        else {
            panic!("rejected_lines is not an integer column");
        };
        assert_eq!(rejected, &[2]);
    }
}
