//! A quicker way in for one batch worker's requests, in front of its [`Aggregates`].
//!
//! A request's region and client are functions of its visitor: the visitor hash is keyed by the
//! address and the whole User-Agent, the region depends on the address only and the client
//! class on the User-Agent only. So instead of finding the request's region cell and client
//! cell and adding the visitor to each (two hashed keys, two visitor tables, each usually a
//! cache miss), the front keeps one record per visitor and period, with its region, its client
//! and what it contributed, plus running totals per region and client. Places and classes are
//! numbered once per allocation the worker hands over (an address compare, not a hash).
//!
//! [`Front::flush_into`] turns the records into the cells [`Aggregates::observe`] would have
//! built, exactly: each visitor joins its region's and client's cells with its summed
//! contribution. A request whose visitor hash already stands for another region or client (two
//! visitors sharing a 64-bit hash) is counted the plain way instead, so the cells stay exact
//! even then (the sets do; cells built as counts, [`Settled::build`], count such a hash twice
//! where both its visitors are).
//!
//! Since a visitor's place is a function of its address, a request can come with its address
//! instead of its place ([`Origin::Address`]): the front then looks the place up only for a
//! visitor it has not met in the period yet, a batch of such visitors' addresses at a time
//! ([`Locate`]), and every later request of the visitor takes the place of its record. A batch
//! run's workers look up about one address per visitor instead of one per request (on the
//! 1M-line benchmark, 200,000 instead of 1,000,000). The one difference from looking every
//! request up: two visitors whose hashes collide and whose clients agree are counted in the
//! first one's place even where their addresses are in different places.
//!
//! Referrers vary from request to request: their cells are kept here by number (the referrer
//! stage hands out one allocation per value, as the others do), which saves hashing the domain
//! per request, and are merged into the aggregates' cells as they are; when only their counts
//! are needed, a visitor's referrers are bits of its record instead
//! ([`Front::count_referrers_only`]).
//!
//! A request is numbered on arrival and counted a few thousand requests later, in order, by
//! [`Front::settle`], which asks for the table slots of requests further on while it counts one:
//! the two tables a request touches are mostly not in the processor's caches, and this way many
//! of those fetches are under way at once instead of one after the other.
//!
//! The workers of one run share their visitors out ([`Front::shared`]): each visitor hash has
//! one owner among them, and a worker sends the requests of visitors it does not own to their
//! owner, which counts them with its own. A visitor's records are then kept once, whatever the
//! number of workers, instead of once in each worker whose lines it appears in (with 2 workers,
//! nearly every visitor was in both tables; with 16, in up to 16), and the partials merged at the
//! end have disjoint visitors. Places, clients and referrers are numbered for the whole run (a
//! lock taken only for an allocation a worker has not met yet), so a number means the same in
//! every worker.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crossbeam_channel::{Receiver, Sender};

use logcensus_enrich::{ClientClass, Place};
use logcensus_policy::TableName;

use super::table::{Table, VisitorTable};
use super::{Aggregates, Cell, Contribution, Observation, Origin};

/// One worker's region and client counts, not yet in its aggregates.
pub struct Front {
    places: Numbered<Place>,
    clients: Numbered<ClientClass>,
    referrers: Numbered<str>,
    periods: BTreeMap<i64, Guests>,
    /// Requests numbered but not yet in `periods`, in arrival order, by the worker that owns
    /// their visitor ([`owner`]; one box when visitors are not shared out): this worker's own
    /// at [`Front::me`], the others' sent at [`Front::settle`].
    boxes: Vec<Vec<Pending>>,
    /// Which of `boxes` is this worker's (0 on its own).
    me: usize,
    /// Requests in `boxes`, all told.
    held: usize,
    /// The other workers, when visitors are shared out among several.
    exchange: Option<Exchange>,
    /// Whether referrer cells keep only how many visitors they have (see
    /// [`Front::count_referrers_only`]).
    referrer_counts: bool,
    /// Whether the database knew each place this front looked up, by place number.
    known: Vec<bool>,
    /// Crawlers' requests that the demographic tables exclude, by period, whose addresses are
    /// still to be looked up for the traffic quality's count of unknown places.
    quality_only: Vec<(i64, IpAddr)>,
    /// [`Front::count`]'s working lists (see [`Located`]).
    located: Located,
}

/// What [`Front::count`] does once a batch of requests' addresses are looked up.
#[derive(Default)]
struct Located {
    /// Visitors met for the first time, with the address to look up and the bytes of their
    /// first request.
    fresh: Vec<(u64, IpAddr, u64)>,
    /// Further requests (visitor, bytes) of visitors in `fresh`.
    waiting: Vec<(u64, u64)>,
    /// Requests (visitor, address, client, bytes) whose visitor hash stands for another client
    /// already (two visitors sharing a 64-bit hash): counted the plain way.
    plain: Vec<(u64, IpAddr, u32, u64)>,
    /// The addresses of `fresh` and then `plain`, and their place numbers.
    addresses: Vec<IpAddr>,
    numbers: Vec<u32>,
}

/// Looks up the places of addresses: what a [`Front`] asks for the requests whose origin is an
/// address ([`Origin::Address`]), a batch of them at a time.
pub trait Locate {
    /// Calls `each(i, place, known)` for every `addresses[i]`, in order, where `known` says
    /// whether the database knew the address.
    fn locate(&mut self, addresses: &[IpAddr], each: &mut dyn FnMut(usize, &Arc<Place>, bool));
}

/// One worker's part in sharing visitors out: the way to every other worker.
struct Exchange {
    /// To each worker (`None` for this one), requests of the visitors it owns.
    to: Vec<Option<Sender<Vec<Pending>>>>,
    /// Requests other workers sent here, of visitors this one owns.
    inbox: Receiver<Vec<Pending>>,
}

/// Which of `n` workers owns `visitor`: each about 1/n of them. The high bits of a product with
/// every bit of the hash in it, so the owner says nothing of the low bits that place a visitor
/// in a table (and hashes that differ only in their low bits still spread out).
fn owner(visitor: u64, n: usize) -> usize {
    let mixed = visitor.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32;
    ((mixed * n as u64) >> 32) as usize
}

/// One period's visitors, totals by region and client number, and referrer cells by number.
#[derive(Default)]
struct Guests {
    visitors: Table<Guest>,
    places: Vec<Totals>,
    clients: Vec<Totals>,
    referrers: Vec<Cell>,
    /// Referrers numbered below [`REFERRER_BITS`] when only their counts are kept: each
    /// visitor's are bits of its record ([`Guest::referrers`]).
    referrer_totals: Vec<Totals>,
}

/// A visitor's region and client numbers, and what it contributed.
#[derive(Debug, Default, Clone, Copy)]
struct Guest {
    place: u32,
    client: u32,
    contribution: Contribution,
    /// Bit `r` set: the visitor came from referrer `r` (below [`REFERRER_BITS`]), when referrer
    /// cells keep counts only.
    referrers: u64,
}

/// Referrer numbers that a visitor record has a bit for.
const REFERRER_BITS: u32 = 64;

/// A request as the front counts it: its period, visitor, numbers and bytes.
#[derive(Debug, Clone, Copy)]
struct Pending {
    period: i64,
    visitor: u64,
    bytes: u64,
    /// The place's number, or [`LOCATE`]: look `address` up.
    place: u32,
    client: u32,
    referrer: u32,
    address: IpAddr,
}

/// Why a visitor of [`Located`] is in its period's table: [`Front::count`] put it there.
const MET: &str = "a visitor met in this batch is in its period's table";

/// [`Pending::place`] of a request whose place is looked up from its address, and
/// [`Guest::place`] of a visitor whose place is being looked up.
const LOCATE: u32 = u32::MAX;

/// Requests held before they are settled: about one batch's. Enough that the table slots of
/// the requests a few places ahead can be asked for while one is counted.
const PENDING: usize = 4096;

/// How many requests ahead [`Front::settle`] asks for table slots.
const AHEAD: usize = 16;

#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    requests: u64,
    bytes: u64,
    /// Visitor records that name this number (the size of its cell's visitor table); for a
    /// referrer counted in visitor records, those with its bit set.
    visitors: u64,
}

impl Totals {
    /// Counts a request of `bytes` in `list[i]`, and returns it.
    fn add(list: &mut Vec<Totals>, i: u32, bytes: u64) -> &mut Totals {
        let i = i as usize;
        if list.len() <= i {
            list.resize(i + 1, Totals::default());
        }
        let t = &mut list[i];
        t.requests += 1;
        t.bytes = t.bytes.saturating_add(bytes);
        t
    }
}

/// Records whether the database knew place number `n` (`known` grows as numbers are given).
fn set_known(known: &mut Vec<bool>, n: u32, k: bool) {
    let n = n as usize;
    if known.len() <= n {
        known.resize(n + 1, true);
    }
    known[n] = k;
}

/// Distinct keys numbered in order of arrival. Most requests find their number by the key's
/// allocation (one hashed word): the geo and User-Agent stages hand out shared `Arc`s, so a
/// worker sees each allocation many times. A new allocation is numbered by value in `shared`
/// (the run's numbers, when visitors are shared out), so that equal keys in different
/// allocations, and in different workers, share one number.
struct Numbered<K: ?Sized> {
    shared: Arc<Mutex<Numbers<K>>>,
    /// The number of every allocation met so far, by its address.
    by_address: ByAddress,
    /// Every allocation in `by_address`, held so that its address cannot be freed and reused for
    /// another key while it is remembered.
    held: Vec<Arc<K>>,
    /// This worker's copy of `shared`'s keys, as far as it has needed them.
    keys: Vec<Arc<K>>,
}

/// Allocation address → number, in open addressing with linear probing, at most half full.
///
/// Every request looks up three numbers here, and a run meets a few thousand allocations (about
/// 1,600 places and 270 clients per worker on the 1M-line GeoLite2 benchmark). A small
/// direct-mapped memo in front of a `HashMap` missed on a sixth of the lookups there (the
/// allocations outnumbered its 256 places), each miss a hashed probe of the map's separate
/// buckets; here a lookup is a multiplication and, nearly always, one slot.
struct ByAddress {
    /// `(address, number)`; address 0 (no allocation's) marks an empty slot.
    slots: Box<[(usize, u32)]>,
    used: usize,
    /// 64 less the log2 of the number of slots: the product's top bits pick the first slot.
    shift: u32,
}

/// `ByAddress`'s first size: a few kilobytes.
const BY_ADDRESS_SLOTS: usize = 256;

impl ByAddress {
    fn with_slots(n: usize) -> Self {
        debug_assert!(n.is_power_of_two() && n >= 2);
        ByAddress {
            slots: vec![(0, 0); n].into_boxed_slice(),
            used: 0,
            shift: 64 - n.trailing_zeros(),
        }
    }

    /// The first slot to look at for `address`. Allocations are aligned and close together, so
    /// their low bits say little: the top bits of a product with an odd constant (Fibonacci
    /// hashing) depend on all of them.
    #[inline]
    fn first_slot(&self, address: usize) -> usize {
        ((address as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    #[inline]
    fn get(&self, address: usize) -> Option<u32> {
        let mask = self.slots.len() - 1;
        let mut i = self.first_slot(address);
        loop {
            let (seen, n) = self.slots[i];
            if seen == address {
                return Some(n);
            }
            if seen == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Adds `address` (not in the table, not 0) with its number.
    fn insert(&mut self, address: usize, n: u32) {
        if (self.used + 1) * 2 > self.slots.len() {
            let mut bigger = ByAddress::with_slots(self.slots.len() * 2);
            for &(seen, m) in self.slots.iter().filter(|(seen, _)| *seen != 0) {
                bigger.insert(seen, m);
            }
            *self = bigger;
        }
        let mask = self.slots.len() - 1;
        let mut i = self.first_slot(address);
        while self.slots[i].0 != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = (address, n);
        self.used += 1;
    }
}

/// Keys by number, and numbers by value.
struct Numbers<K: ?Sized> {
    keys: Vec<Arc<K>>,
    by_value: HashMap<Arc<K>, u32, foldhash::fast::RandomState>,
}

impl<K: ?Sized> Default for Numbers<K> {
    fn default() -> Self {
        Numbers {
            keys: Vec::new(),
            by_value: HashMap::default(),
        }
    }
}

impl<K: Hash + Eq + ?Sized> Numbered<K> {
    fn new(shared: Arc<Mutex<Numbers<K>>>) -> Self {
        Numbered {
            shared,
            by_address: ByAddress::with_slots(BY_ADDRESS_SLOTS),
            held: Vec::new(),
            keys: Vec::new(),
        }
    }

    fn number(&mut self, key: &Arc<K>) -> u32 {
        let address = Arc::as_ptr(key).cast::<u8>() as usize;
        match self.by_address.get(address) {
            Some(n) => n,
            None => self.number_new(key, address),
        }
    }

    /// [`Numbered::number`] of an allocation met for the first time.
    #[cold]
    fn number_new(&mut self, key: &Arc<K>, address: usize) -> u32 {
        let n = {
            // The lock guards plain inserts: a panic while holding it leaves nothing half-done.
            let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            match shared.by_value.get(key) {
                Some(&n) => n,
                None => {
                    let n = u32::try_from(shared.keys.len())
                        .expect("fewer than 2^32 places or clients");
                    shared.keys.push(key.clone());
                    shared.by_value.insert(key.clone(), n);
                    n
                }
            }
        };
        self.held.push(key.clone());
        self.by_address.insert(address, n);
        n
    }

    /// The key numbered `n` (by this worker or another).
    fn key(&mut self, n: u32) -> &Arc<K> {
        let n = n as usize;
        if n >= self.keys.len() {
            self.refresh();
        }
        &self.keys[n]
    }

    /// Brings `keys` up to every number given so far.
    fn refresh(&mut self) {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        let known = self.keys.len();
        self.keys.extend_from_slice(&shared.keys[known..]);
    }
}

impl Default for Front {
    fn default() -> Self {
        Front::new()
    }
}

impl Front {
    /// A front for a worker on its own.
    pub fn new() -> Self {
        Front::numbered_by(Arc::default(), Arc::default(), Arc::default(), None)
    }

    /// Fronts for `n` workers of one run, which share their visitors out: each visitor is
    /// counted by one of them, whichever worker reads its lines (see the module docs). Every
    /// front's [`Front::flush_into`] waits until all of them are flushing, so each must be
    /// flushed (or dropped) on its own thread.
    pub fn shared(n: usize) -> Vec<Front> {
        if n <= 1 {
            return vec![Front::new()];
        }
        let places: Arc<Mutex<Numbers<Place>>> = Arc::default();
        let clients: Arc<Mutex<Numbers<ClientClass>>> = Arc::default();
        let referrers: Arc<Mutex<Numbers<str>>> = Arc::default();
        let (senders, inboxes): (Vec<_>, Vec<_>) =
            (0..n).map(|_| crossbeam_channel::unbounded()).unzip();
        inboxes
            .into_iter()
            .enumerate()
            .map(|(me, inbox)| {
                let to = senders
                    .iter()
                    .enumerate()
                    .map(|(j, s)| (j != me).then(|| s.clone()))
                    .collect();
                Front::numbered_by(
                    places.clone(),
                    clients.clone(),
                    referrers.clone(),
                    Some((me, Exchange { to, inbox })),
                )
            })
            .collect()
    }

    fn numbered_by(
        places: Arc<Mutex<Numbers<Place>>>,
        clients: Arc<Mutex<Numbers<ClientClass>>>,
        referrers: Arc<Mutex<Numbers<str>>>,
        exchange: Option<(usize, Exchange)>,
    ) -> Front {
        let (me, exchange) = match exchange {
            Some((me, x)) => (me, Some(x)),
            None => (0, None),
        };
        let n = exchange.as_ref().map_or(1, |x| x.to.len());
        Front {
            places: Numbered::new(places),
            clients: Numbered::new(clients),
            referrers: Numbered::new(referrers),
            periods: BTreeMap::new(),
            boxes: (0..n).map(|_| Vec::with_capacity(PENDING / n)).collect(),
            me,
            held: 0,
            exchange,
            referrer_counts: false,
            known: Vec::new(),
            quality_only: Vec::new(),
            located: Located::default(),
        }
    }

    /// Has this front keep only how many visitors each referrer cell has, not which, for a
    /// `referrers` table released as counted whose partials are merged by
    /// [`Aggregates::merge_disjoint`] (with `referrers` among its tables of counts only). A
    /// request then marks its referrer in its visitor's record (one bit each for the first
    /// 64 referrers of the run) instead of adding its visitor to the referrer's
    /// own table: one table visited per request instead of two. The counts are exact: a visitor
    /// is counted in a cell the first time its bit is set.
    pub fn count_referrers_only(&mut self) {
        self.referrer_counts = true;
    }

    /// Counts one parsed request: what [`Aggregates::observe`] counts, with the region, client
    /// and referrer cells kept here until [`Front::flush_into`]. Its traffic quality is counted
    /// at once (whether its place is known, once it is looked up); the rest waits in its
    /// owner's box until [`Front::settle`], which its caller calls once [`Front::is_full`].
    pub fn observe(&mut self, obs: &Observation<'_>, agg: &mut Aggregates) {
        let counted = agg.count_quality(obs);
        let (place, address) = match obs.origin {
            Origin::Place(place, known) => {
                let n = self.places.number(place);
                set_known(&mut self.known, n, known);
                (n, IpAddr::from([0; 4]))
            }
            Origin::Address(address) => (LOCATE, address),
        };
        let Some(period) = counted else {
            if place == LOCATE {
                self.quality_only
                    .push((agg.period.start(obs.time), address));
                self.held += 1;
            }
            return;
        };
        let request = Pending {
            period,
            visitor: obs.visitor,
            bytes: obs.bytes,
            place,
            client: self.clients.number(obs.client),
            referrer: self.referrers.number(obs.referrer),
            address,
        };
        // Into its owner's box, this worker's own included, without a branch on the owner:
        // which worker owns a request is a coin toss from one request to the next, and a
        // mispredicted branch per request cost more than a copy (with one box, the owner is 0).
        // Put there at once, where settling once copied each batch's requests into the boxes.
        let n = self.boxes.len();
        self.boxes[owner(request.visitor, n)].push(request);
        self.held += 1;
    }

    /// Whether about a batch of requests is waiting for [`Front::settle`].
    pub fn is_full(&self) -> bool {
        self.held >= PENDING
    }

    /// Counts the pending requests into their periods' visitor records and referrer cells.
    ///
    /// Each request adds its visitor to two tables (its period's visitor records and its
    /// referrer's cell, unless the referrer is a bit of the visitor's record), each usually far
    /// larger than the processor's caches; one at a time,
    /// each addition would wait for memory. Here the slots of the requests `AHEAD` places
    /// further on are asked for first, so that many fetches are under way at once. Requests are
    /// settled in arrival order, so the counts are those of counting each on arrival.
    ///
    /// When visitors are shared out, the requests of visitors another worker owns are sent to
    /// it instead, and those other workers sent here are counted too.
    pub fn settle(&mut self, agg: &mut Aggregates, locate: &mut impl Locate) {
        if let Some(x) = &self.exchange {
            for (outbox, to) in self.boxes.iter_mut().zip(&x.to) {
                if let (false, Some(to)) = (outbox.is_empty(), to) {
                    // Sent with a box of the same size left in its place, so the next batch's
                    // pushes do not grow one from nothing.
                    let full = std::mem::replace(outbox, Vec::with_capacity(outbox.capacity()));
                    // The owner's inbox outlives it only if it panicked: then so does the run.
                    let _ = to.send(full);
                }
            }
        }
        let mine = std::mem::take(&mut self.boxes[self.me]);
        self.count(&mine, agg, locate);
        // The buffer is kept for the next requests.
        self.boxes[self.me] = mine;
        self.boxes[self.me].clear();
        self.held = 0;
        while let Some(inbound) = self.exchange.as_ref().and_then(|x| x.inbox.try_recv().ok()) {
            self.count(&inbound, agg, locate);
        }
        self.count_quality_only(agg, locate);
    }

    /// Looks up the addresses of the excluded crawlers' requests, and counts those the
    /// database did not know in their periods' traffic quality.
    fn count_quality_only(&mut self, agg: &mut Aggregates, locate: &mut impl Locate) {
        if self.quality_only.is_empty() {
            return;
        }
        let addresses = &mut self.located.addresses;
        addresses.clear();
        addresses.extend(self.quality_only.iter().map(|&(_, a)| a));
        let periods = &self.quality_only;
        locate.locate(addresses, &mut |i, _, known| {
            agg.count_unknown_geo(periods[i].0, u64::from(!known));
        });
        self.quality_only.clear();
    }

    /// Counts `requests` (of visitors this worker owns) into their periods' visitor records and
    /// referrer cells, in order. The requests whose origin is an address take the place of
    /// their visitor's record; those of visitors met here for the first time have their
    /// addresses looked up together, after the rest, and their place cells counted then.
    fn count(&mut self, requests: &[Pending], agg: &mut Aggregates, locate: &mut impl Locate) {
        let mut rest = requests;
        while let Some(first) = rest.first() {
            // One period at a time (a log rarely has more than one in a batch).
            let run = rest
                .iter()
                .position(|r| r.period != first.period)
                .unwrap_or(rest.len());
            let (now, later) = rest.split_at(run);
            rest = later;
            let guests = self.periods.entry(first.period).or_default();
            let referrers = now
                .iter()
                .map(|r| r.referrer as usize + 1)
                .max()
                .unwrap_or(0);
            if guests.referrers.len() < referrers {
                guests.referrers.resize_with(referrers, Cell::default);
            }
            let counted = |r: &Pending| self.referrer_counts && r.referrer < REFERRER_BITS;
            let located = &mut self.located;
            // Requests that took their visitor's place, one the database did not know (those
            // of visitors met here first are counted once their places are looked up).
            let mut unknown = 0;
            for (i, r) in now.iter().enumerate() {
                if let Some(next) = now.get(i + AHEAD) {
                    guests.visitors.prefetch(next.visitor);
                    if !counted(next) {
                        guests.referrers[next.referrer as usize]
                            .visitors
                            .prefetch(next.visitor);
                    }
                }
                let contribution = Contribution::of(r.bytes);
                let (guest, new) = guests.visitors.entry(r.visitor);
                if counted(r) {
                    let bit = 1 << r.referrer;
                    let first = guest.referrers & bit == 0;
                    guest.referrers |= bit;
                    Totals::add(&mut guests.referrer_totals, r.referrer, r.bytes).visitors +=
                        u64::from(first);
                } else {
                    guests.referrers[r.referrer as usize].add_request(r.visitor, r.bytes);
                }
                if r.place == LOCATE {
                    // The place is the visitor's, found once: its address is the visitor's.
                    if new {
                        *guest = Guest {
                            place: LOCATE,
                            client: r.client,
                            contribution,
                            referrers: guest.referrers,
                        };
                        located.fresh.push((r.visitor, r.address, r.bytes));
                    } else if guest.client == r.client {
                        guest.contribution.add(contribution);
                        if guest.place == LOCATE {
                            located.waiting.push((r.visitor, r.bytes));
                        } else {
                            Totals::add(&mut guests.places, guest.place, r.bytes);
                            // Not among this front's numbers only for a place another worker
                            // numbered, given with a request whose hash this one shares.
                            let known = self.known.get(guest.place as usize);
                            unknown += u64::from(known == Some(&false));
                        }
                    } else {
                        located
                            .plain
                            .push((r.visitor, r.address, r.client, r.bytes));
                        continue;
                    }
                    Totals::add(&mut guests.clients, r.client, r.bytes).visitors += u64::from(new);
                    continue;
                }
                if new {
                    *guest = Guest {
                        place: r.place,
                        client: r.client,
                        contribution,
                        referrers: guest.referrers,
                    };
                } else if guest.place == r.place && guest.client == r.client {
                    guest.contribution.add(contribution);
                } else {
                    agg.observe_region_client(
                        first.period,
                        self.places.key(r.place),
                        self.clients.key(r.client),
                        r.visitor,
                        r.bytes,
                    );
                    continue;
                }
                // A new visitor record is one more visitor in its place's and client's cells.
                let new = u64::from(new);
                Totals::add(&mut guests.places, r.place, r.bytes).visitors += new;
                Totals::add(&mut guests.clients, r.client, r.bytes).visitors += new;
            }
            agg.count_unknown_geo(first.period, unknown);
            if !(located.fresh.is_empty() && located.plain.is_empty()) {
                self.count_located(first.period, agg, locate);
            }
        }
    }

    /// Looks up the addresses [`Front::count`] left in `located` for one period, and counts
    /// what waited for them.
    fn count_located(&mut self, period: i64, agg: &mut Aggregates, locate: &mut impl Locate) {
        let Located {
            fresh,
            waiting,
            plain,
            addresses,
            numbers,
        } = &mut self.located;
        addresses.clear();
        addresses.extend(fresh.iter().map(|&(_, address, _)| address));
        addresses.extend(plain.iter().map(|&(_, address, _, _)| address));
        numbers.clear();
        let (places, known) = (&mut self.places, &mut self.known);
        locate.locate(addresses, &mut |_, place, k| {
            let n = places.number(place);
            set_known(known, n, k);
            numbers.push(n);
        });
        let guests = self
            .periods
            .get_mut(&period)
            .expect("the period's requests were just counted");
        let mut unknown = 0;
        for (&(visitor, _, bytes), &n) in fresh.iter().zip(&*numbers) {
            guests.visitors.get_mut(visitor).expect(MET).place = n;
            Totals::add(&mut guests.places, n, bytes).visitors += 1;
            unknown += u64::from(!self.known[n as usize]);
        }
        for &(visitor, bytes) in waiting.iter() {
            let n = guests.visitors.get_mut(visitor).expect(MET).place;
            Totals::add(&mut guests.places, n, bytes);
            unknown += u64::from(!self.known[n as usize]);
        }
        for (&(visitor, _, client, bytes), &n) in plain.iter().zip(&numbers[fresh.len()..]) {
            agg.observe_region_client(
                period,
                self.places.key(n),
                self.clients.key(client),
                visitor,
                bytes,
            );
            unknown += u64::from(!self.known[n as usize]);
        }
        agg.count_unknown_geo(period, unknown);
        fresh.clear();
        waiting.clear();
        plain.clear();
    }

    /// Adds everything counted here into `agg`. When visitors are shared out, this first waits
    /// for the requests the other workers still send here, until every one of them is flushing.
    pub fn flush_into(self, agg: &mut Aggregates, locate: &mut impl Locate) {
        let settled = self.settle_into(agg, locate);
        Settled::add_all(vec![settled], agg, 1);
    }

    /// Counts every request still pending (waiting, when visitors are shared out, for the
    /// requests the other workers still send here, until every one of them is settling) and
    /// adds the referrer cells into `agg`. The region and client cells are left to
    /// [`Settled::add_all`], which can build them once from all the workers' visitors instead
    /// of once per worker and then again in a merge.
    pub fn settle_into(mut self, agg: &mut Aggregates, locate: &mut impl Locate) -> Settled {
        self.settle(agg, locate);
        if let Some(mut x) = self.exchange.take() {
            // Nothing more goes out from here; the inbox ends when every other worker says so.
            x.to.clear();
            for inbound in x.inbox.iter() {
                self.count(&inbound, agg, locate);
            }
        }
        self.places.refresh();
        self.clients.refresh();
        self.referrers.refresh();
        let Front {
            places,
            clients,
            referrers,
            mut periods,
            boxes: _,
            me: _,
            held: _,
            exchange: _,
            referrer_counts: _,
            known: _,
            quality_only: _,
            located: _,
        } = self;
        for (&p, guests) in &mut periods {
            let mut cells = std::mem::take(&mut guests.referrers);
            // Referrers counted in visitor records: their cells have counts only.
            let totals = std::mem::take(&mut guests.referrer_totals);
            if cells.len() < totals.len() {
                cells.resize_with(totals.len(), Cell::default);
            }
            for (cell, t) in cells.iter_mut().zip(totals) {
                cell.requests += t.requests;
                cell.bytes = cell.bytes.saturating_add(t.bytes);
                cell.counted += t.visitors;
            }
            let cells = cells.into_iter().map(|c| (c.requests > 0).then_some(c));
            Aggregates::merge_cells(&mut agg.referrers, p, referrers.keys.iter().zip(cells));
        }
        Settled {
            place_numbers: places.shared,
            client_numbers: clients.shared,
            places: places.keys,
            clients: clients.keys,
            periods,
        }
    }
}

/// A front's visitor records once every request is counted, not yet turned into region and
/// client cells (see [`Front::settle_into`]).
pub struct Settled {
    /// The run's numbering of places and clients, to check that fronts built together share
    /// it.
    place_numbers: Arc<Mutex<Numbers<Place>>>,
    client_numbers: Arc<Mutex<Numbers<ClientClass>>>,
    places: Vec<Arc<Place>>,
    clients: Vec<Arc<ClientClass>>,
    periods: BTreeMap<i64, Guests>,
}

/// The region and client cells of one run's fronts, by period and number (`None` where
/// nothing was counted), and the keys of those numbers: see [`Settled::build`].
#[derive(Default)]
pub struct Built {
    places: Vec<Arc<Place>>,
    clients: Vec<Arc<ClientClass>>,
    by_place: Vec<(i64, Vec<Option<Cell>>)>,
    by_client: Vec<(i64, Vec<Option<Cell>>)>,
}

impl Settled {
    /// Adds the region and client cells of `fronts` into `agg`: [`Settled::build`], then
    /// [`Built::add_into`].
    pub fn add_all(mut fronts: Vec<Settled>, agg: &mut Aggregates, threads: usize) {
        Settled::build(&mut fronts, threads, &[]).add_into(agg);
    }

    /// The region and client cells of `fronts`: those that flushing each front and merging
    /// the results would make, each built once. Each visitor joins its region's and its
    /// client's cell with what it contributed; one met in several fronts (fronts that did not
    /// share visitors out) joins them once with its contributions summed, as a merge would.
    /// The two tables are built side by side when `threads` is 2 or more.
    ///
    /// The cells of a table in `counts_only` ([`TableName::TrafficByRegion`] for the region
    /// cells, [`TableName::Clients`] for the client cells) get the number of their visitors
    /// instead of a set of them, as [`Aggregates::merge_disjoint`] leaves them: each visitor
    /// record of a run's fronts is one visitor of its cells (the fronts share visitors out, so
    /// no visitor is in two of them), counted while the requests were. Adding each visitor to
    /// a table is most of the time a build takes. The one difference from the sets: a visitor
    /// hash that stood for two regions or clients (a 64-bit collision of two visitors, which
    /// [`Front`] counts the plain way) counts as the two visitors it is in a cell both are in,
    /// where a set holds it once.
    ///
    /// The fronts are left to the caller, their place and client keys taken: dropping a run's
    /// visitor records frees tens of megabytes, which a caller can do beside other work.
    ///
    /// # Panics
    /// If the fronts do not share one run's numbering (they were not made by one
    /// [`Front::shared`]).
    pub fn build(fronts: &mut [Settled], threads: usize, counts_only: &[TableName]) -> Built {
        let Some(first) = fronts.first() else {
            return Built::default();
        };
        assert!(
            fronts
                .iter()
                .all(|f| Arc::ptr_eq(&f.place_numbers, &first.place_numbers)
                    && Arc::ptr_eq(&f.client_numbers, &first.client_numbers)),
            "fronts built together must number places and clients alike"
        );
        // Every front refreshed its keys when it settled: the longest lists have them all.
        let i = (0..fronts.len()).max_by_key(|&i| fronts[i].places.len());
        let places = std::mem::take(&mut fronts[i.unwrap_or(0)].places);
        let i = (0..fronts.len()).max_by_key(|&i| fronts[i].clients.len());
        let clients = std::mem::take(&mut fronts[i.unwrap_or(0)].clients);
        let build = |of_place: bool| {
            let table = if of_place {
                TableName::TrafficByRegion
            } else {
                TableName::Clients
            };
            cells_by_number(fronts, of_place, !counts_only.contains(&table))
        };
        let (by_place, by_client) = if threads >= 2 {
            std::thread::scope(|s| {
                let clients = s.spawn(|| build(false));
                let by_place = build(true);
                let by_client = clients
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                (by_place, by_client)
            })
        } else {
            (build(true), build(false))
        };
        Built {
            places,
            clients,
            by_place,
            by_client,
        }
    }
}

impl Built {
    /// Adds the cells into `agg` (merged with any it has).
    pub fn add_into(self, agg: &mut Aggregates) {
        for (p, cells) in self.by_place {
            Aggregates::merge_cells(&mut agg.traffic, p, self.places.iter().zip(cells));
        }
        for (p, cells) in self.by_client {
            Aggregates::merge_cells(&mut agg.clients, p, self.clients.iter().zip(cells));
        }
    }
}

/// For every period of `fronts`, its region cells (`of_place`) or client cells by number
/// (`None` where nothing was counted), each visitor added to the cell of its number (`sets`)
/// or counted in it.
fn cells_by_number(
    fronts: &[Settled],
    of_place: bool,
    sets: bool,
) -> Vec<(i64, Vec<Option<Cell>>)> {
    let periods: std::collections::BTreeSet<i64> = fronts
        .iter()
        .flat_map(|f| f.periods.keys().copied())
        .collect();
    let number = |g: &Guest| if of_place { g.place } else { g.client } as usize;
    periods
        .into_iter()
        .map(|p| {
            let guests: Vec<&Guests> = fronts.iter().filter_map(|f| f.periods.get(&p)).collect();
            let mut totals: Vec<Totals> = Vec::new();
            for g in &guests {
                let theirs = if of_place { &g.places } else { &g.clients };
                if totals.len() < theirs.len() {
                    totals.resize(theirs.len(), Totals::default());
                }
                for (t, their) in totals.iter_mut().zip(theirs) {
                    t.requests += their.requests;
                    t.bytes = t.bytes.saturating_add(their.bytes);
                    t.visitors += their.visitors;
                }
            }
            // Each table sized once, for the visitor records that name its number; or, without
            // sets, that number alone.
            let mut cells: Vec<Option<Cell>> = totals
                .iter()
                .map(|t| {
                    let (kept, counted) = if sets {
                        (t.visitors, 0)
                    } else {
                        (0, t.visitors)
                    };
                    (t.requests > 0).then(|| Cell {
                        requests: t.requests,
                        bytes: t.bytes,
                        visitors: VisitorTable::with_capacity(kept as usize),
                        counted,
                    })
                })
                .collect();
            if sets {
                for g in &guests {
                    for (visitor, guest) in g.visitors.iter() {
                        if let Some(cell) = &mut cells[number(&guest)] {
                            cell.visitors.add(visitor, guest.contribution);
                        }
                    }
                }
            }
            (p, cells)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses as allocations have them: aligned, close together, in runs from a few arenas.
    fn addresses() -> Vec<usize> {
        (0..3_000)
            .map(|i| 0x5555_0000_0010 + (i % 3) * 0x1_0000_0000 + (i / 3) * 48)
            .collect()
    }

    #[test]
    fn by_address_finds_every_number_it_was_given_and_nothing_else() {
        let mut table = ByAddress::with_slots(BY_ADDRESS_SLOTS);
        let all = addresses();
        for (n, &a) in all.iter().enumerate() {
            assert_eq!(table.get(a), None, "{a:#x} before it was added");
            table.insert(a, n as u32);
            // Every address so far still answers, across each growth.
            if n % 97 == 0 || n.is_power_of_two() {
                for (m, &b) in all[..=n].iter().enumerate() {
                    assert_eq!(table.get(b), Some(m as u32), "{b:#x} after {n} inserts");
                }
            }
        }
        assert_eq!(table.used, 3_000);
        // At most half full: 3,000 addresses in 8,192 slots.
        assert_eq!(table.slots.len(), 8_192);
        for a in [
            0x5555_0000_0018,
            0x5555_0000_0010 + 1_000 * 48 + 8,
            0x10,
            usize::MAX,
        ] {
            assert_eq!(table.get(a), None, "{a:#x} was never added");
        }
    }

    #[test]
    fn numbered_gives_equal_keys_in_different_allocations_one_number() {
        let shared: Arc<Mutex<Numbers<str>>> = Arc::default();
        let mut one = Numbered::new(shared.clone());
        let mut two = Numbered::new(shared);
        let keys: Vec<Arc<str>> = (0..600)
            .map(|i| Arc::from(format!("k{}", i % 300)))
            .collect();
        let numbers: Vec<u32> = keys.iter().map(|k| one.number(k)).collect();
        for (i, k) in keys.iter().enumerate() {
            // The same allocation again, and an equal key in another allocation and worker.
            assert_eq!(one.number(k), numbers[i]);
            assert_eq!(two.number(&Arc::from(&**k)), numbers[i]);
            assert_eq!(&**two.key(numbers[i]), &**k);
        }
        assert_eq!(numbers[..300], (0..300).collect::<Vec<u32>>()[..]);
        assert_eq!(numbers[300..], numbers[..300]);
    }
}
