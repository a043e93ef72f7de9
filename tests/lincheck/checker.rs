//! The linearizability checker: Wing & Gong's search as improved by Lowe and by Porcupine —
//! a depth-first search over the call/return events in real-time order, trying to linearize
//! one pending call at a time, backtracking on a return whose call is not yet linearized,
//! and memoizing every (set of linearized ops, model state) configuration already explored so
//! no configuration is expanded twice.
//!
//! The model is one key of the KV store (see [`step_one`]); a history is split by key first
//! (a history is linearizable iff each key's sub-history is: P-compositionality) and each key
//! is searched on its own, within a step budget. A search that runs out of budget reports
//! [`KeyResult::Unknown`] — never "linearizable".
//!
//! When a key fails, [`minimize`] cuts the history to a short sub-history that still fails,
//! using only cuts that cannot turn a linearizable history into a failing one (so the witness
//! is a real violation, not an artifact of the cut).

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::history::{Call, Cond, History, Op, Ret, Time};

/// Default search budget per key (configurations expanded).
pub const DEFAULT_BUDGET: u64 = 1_000_000;

/// The result for one key.
#[derive(Debug, Clone)]
pub enum KeyResult {
    Linearizable,
    NotLinearizable(Witness),
    /// The search budget ran out: nothing is claimed.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct KeyOutcome {
    pub key: String,
    pub ops: usize,
    pub result: KeyResult,
}

/// The verdict on a whole history.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub keys: Vec<KeyOutcome>,
}

impl Outcome {
    /// True only when every key was shown linearizable.
    pub fn is_linearizable(&self) -> bool {
        self.keys
            .iter()
            .all(|k| matches!(k.result, KeyResult::Linearizable))
    }

    /// True when at least one key was shown not linearizable.
    pub fn is_violation(&self) -> bool {
        self.witnesses().next().is_some()
    }

    pub fn witnesses(&self) -> impl Iterator<Item = &Witness> {
        self.keys.iter().filter_map(|k| match &k.result {
            KeyResult::NotLinearizable(w) => Some(w),
            _ => None,
        })
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for k in &self.keys {
            let r = match &k.result {
                KeyResult::Linearizable => "linearizable",
                KeyResult::NotLinearizable(_) => "NOT linearizable",
                KeyResult::Unknown => "unknown (search budget exceeded)",
            };
            writeln!(f, "  key {:?}: {} ops, {r}", k.key, k.ops)?;
        }
        for w in self.witnesses() {
            write!(f, "{w}")?;
        }
        Ok(())
    }
}

/// How the search uses one operation of a (sub-)history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// Its answer and both its times.
    Answered,
    /// Only its call: it may take effect at any point after it, or never (unanswered, or
    /// answered after the end of a cut sub-history).
    Open,
    /// Its call and return time, not its answer, and it may have taken effect before the
    /// sub-history starts (it was running when it starts).
    Running,
}

/// One operation and how the search uses it.
#[derive(Debug, Clone)]
pub struct Item {
    pub op: Op,
    pub how: Use,
}

/// A failing sub-history of one key.
#[derive(Debug, Clone)]
pub struct Witness {
    pub key: String,
    /// Operations of the key in the whole history.
    pub total_ops: usize,
    /// Why it fails, in words.
    pub reason: String,
    /// `None`: the sub-history starts at the beginning (key absent). `Some(t)`: it starts at
    /// `t`, and the key may hold any value written before `t`, or be absent.
    pub starts_at: Option<Time>,
    /// The sub-history, in invocation order.
    pub items: Vec<Item>,
    /// Server life events (kills, restarts) during the sub-history.
    pub events: Vec<(Time, String)>,
}

impl Witness {
    pub fn ops(&self) -> impl Iterator<Item = &Op> {
        self.items.iter().map(|i| &i.op)
    }
}

impl fmt::Display for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "WITNESS key {:?}: {} — a failing sub-history of {} of its {} ops:",
            self.key,
            self.reason,
            self.items.len(),
            self.total_ops
        )?;
        match self.starts_at {
            None => writeln!(f, "    (start: key absent)")?,
            Some(t) => writeln!(
                f,
                "    (start at {:.3}ms: the key holds any value written earlier, or is absent)",
                t as f64 / 1e6
            )?,
        }
        let mut events = self.events.iter().peekable();
        for item in &self.items {
            while let Some((t, what)) = events.next_if(|(t, _)| *t <= item.op.invoke) {
                writeln!(f, "    -- {:.3}ms {what}", *t as f64 / 1e6)?;
            }
            let note = match (item.how, &item.op.ret) {
                (Use::Open, Some(_)) => "  [answered after the cut: answer not used]",
                (Use::Running, _) => {
                    "  [running at the start: answer not used, may have taken effect before]"
                }
                _ => "",
            };
            writeln!(f, "    {}{note}", item.op)?;
        }
        for (t, what) in events {
            writeln!(f, "    -- {:.3}ms {what}", *t as f64 / 1e6)?;
        }
        Ok(())
    }
}

/// Checks a history: per key, in key order.
pub fn check(history: &History, budget: u64) -> Outcome {
    let mut by_key: HashMap<&str, Vec<Op>> = HashMap::new();
    for op in &history.ops {
        by_key.entry(&op.key).or_default().push(op.clone());
    }
    let mut keys: Vec<_> = by_key.into_iter().collect();
    keys.sort_by(|a, b| a.0.cmp(b.0));
    let keys = keys
        .into_iter()
        .map(|(key, ops)| KeyOutcome {
            key: key.to_owned(),
            ops: ops.len(),
            result: check_key(key, ops, &history.events, budget),
        })
        .collect();
    Outcome { keys }
}

/// Checks the sub-history of one key.
pub fn check_key(key: &str, mut ops: Vec<Op>, events: &[(Time, String)], budget: u64) -> KeyResult {
    let total_ops = ops.len();
    // An unanswered GET neither constrains nor changes anything.
    ops.retain(|o| !(o.call == Call::Get && o.ret.is_none()));
    ops.sort_by_key(|o| o.invoke);
    let witness = |reason: String, starts_at, items: Vec<Item>| Witness {
        key: key.to_owned(),
        total_ops,
        reason,
        starts_at,
        events: events_between(events, &items),
        items,
    };
    let tags = match TagMap::build(&ops) {
        Ok(t) => t,
        Err(conflict) => {
            let (a, b, reason) = *conflict;
            let mut pair = vec![a, b];
            pair.sort_by_key(|o| o.invoke);
            return KeyResult::NotLinearizable(witness(reason, None, answered(pair)));
        }
    };
    let items = answered(ops);
    match search(&items, &Initial::Absent, &tags, budget) {
        Search::Linearizable => KeyResult::Linearizable,
        Search::Unknown => KeyResult::Unknown,
        Search::Illegal => {
            let (starts_at, items) = minimize(items, &tags, budget);
            KeyResult::NotLinearizable(witness(
                "no order of these operations explains every answer".to_owned(),
                starts_at,
                items,
            ))
        }
    }
}

/// Every op as recorded: answered ones by their answer, unanswered ones open.
fn answered(ops: Vec<Op>) -> Vec<Item> {
    ops.into_iter()
        .map(|op| Item {
            how: if op.ret.is_some() {
                Use::Answered
            } else {
                Use::Open
            },
            op,
        })
        .collect()
}

fn events_between(events: &[(Time, String)], items: &[Item]) -> Vec<(Time, String)> {
    let from = items.iter().map(|i| i.op.invoke).min().unwrap_or(0);
    let to = items
        .iter()
        .map(|i| i.op.ret.as_ref().map_or(i.op.invoke, |r| r.0))
        .max()
        .unwrap_or(0);
    events
        .iter()
        .filter(|(t, _)| (from..=to).contains(t))
        .cloned()
        .collect()
}

/// Which value each ETag names. An ETag is opaque: answers tie a tag to a value (a PUT's or an
/// applied txn's answer, to the value it wrote; a GET's or a txn else-branch get's, to the
/// value it read). One tag naming two values,
/// or one value (written once) carrying two tags, is itself a violation.
pub struct TagMap {
    value_of: HashMap<String, String>,
}

type TagConflict = Box<(Op, Op, String)>;

impl TagMap {
    pub fn build(ops: &[Op]) -> Result<TagMap, TagConflict> {
        let mut value_of: HashMap<String, (String, &Op)> = HashMap::new();
        let mut tag_of: HashMap<String, (String, &Op)> = HashMap::new();
        for op in ops {
            let (value, tag) = match (&op.call, &op.ret) {
                (Call::Put { value, .. }, Some((_, Ret::Written { etag, .. })))
                | (Call::Txn { value, .. }, Some((_, Ret::TxnApplied { etag }))) => (value, etag),
                (_, Some((_, Ret::Found { value, etag }))) => (value, etag),
                _ => continue,
            };
            if let Some((v, other)) = value_of.get(tag) {
                if v != value {
                    return Err(Box::new((
                        (*other).clone(),
                        op.clone(),
                        format!("ETag {tag} names two values, {v:?} and {value:?}"),
                    )));
                }
            }
            if let Some((t, other)) = tag_of.get(value) {
                if t != tag {
                    return Err(Box::new((
                        (*other).clone(),
                        op.clone(),
                        format!("value {value:?} (written once) carries two ETags, {t} and {tag}"),
                    )));
                }
            }
            value_of.insert(tag.clone(), (value.clone(), op));
            tag_of.insert(value.clone(), (tag.clone(), op));
        }
        Ok(TagMap {
            value_of: value_of.into_iter().map(|(t, (v, _))| (t, v)).collect(),
        })
    }
}

/// The state of the key when the (sub-)history starts.
enum Initial {
    Absent,
    /// Absent, or any of these values (written by operations invoked before the start).
    AnyOf(HashSet<String>),
}

enum Search {
    Linearizable,
    Illegal,
    Unknown,
}

// ---- The compiled model -------------------------------------------------------------------

/// A model state: `ABSENT`, a value id (the value names its write), or `UNKNOWN` ("absent or
/// any value that may be initial", only at the start of a cut sub-history).
type State = u32;
const ABSENT: State = 0;
const UNKNOWN: State = u32::MAX;
/// A tag no answer ever tied to a value: matches nothing.
const NO_VALUE: State = u32::MAX - 1;
/// Stand-in for "a present value the op does not name" while stepping `UNKNOWN`.
const OTHER: State = u32::MAX - 2;

#[derive(Debug, Clone, Copy)]
enum KCond {
    None,
    Match(State),
    NoneMatchAny,
}

#[derive(Debug, Clone, Copy)]
enum KCall {
    Get,
    Put(State, KCond),
    Del(KCond),
    /// If the condition holds, put the value, else get.
    Txn(State, KCond),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KRet {
    Found(State),
    NotFound,
    Written {
        created: bool,
    },
    Deleted,
    Failed,
    /// A txn's condition held and its put was applied.
    Applied,
}

#[derive(Debug, Clone, Copy)]
struct KOp {
    call: KCall,
    /// `None`: the answer is not used (the op does whatever the model says).
    ret: Option<KRet>,
    /// It may also have no effect here (it took effect before the sub-history started).
    optional: bool,
}

struct Compiled {
    ops: Vec<KOp>,
    /// Values that `UNKNOWN` may stand for.
    may_be_initial: HashSet<State>,
    initial_unknown: bool,
}

fn compile(items: &[Item], initial: &Initial, tags: &TagMap) -> Compiled {
    let mut intern: HashMap<String, State> = HashMap::new();
    let mut value_id = |v: &str| -> State {
        let next = State::try_from(intern.len() + 1).expect("fewer than 4e9 values");
        *intern.entry(v.to_owned()).or_insert(next)
    };
    let cond = |c: &Cond, value_id: &mut dyn FnMut(&str) -> State| match c {
        Cond::None => KCond::None,
        Cond::IfNoneMatchAny => KCond::NoneMatchAny,
        Cond::IfMatch(tag) => match tags.value_of.get(tag) {
            Some(v) => KCond::Match(value_id(v)),
            None => KCond::Match(NO_VALUE),
        },
    };
    let mut kops = Vec::with_capacity(items.len());
    for Item { op, how } in items {
        let call = match &op.call {
            Call::Get => KCall::Get,
            Call::Put { value, cond: c } => {
                let v = value_id(value);
                KCall::Put(v, cond(c, &mut value_id))
            }
            Call::Delete { cond: c } => KCall::Del(cond(c, &mut value_id)),
            Call::Txn { value, cond: c } => {
                let v = value_id(value);
                KCall::Txn(v, cond(c, &mut value_id))
            }
        };
        let ret = op
            .ret
            .as_ref()
            .filter(|_| *how == Use::Answered)
            .map(|(_, r)| match r {
                Ret::Found { value, .. } => KRet::Found(value_id(value)),
                Ret::NotFound => KRet::NotFound,
                Ret::Written { created, .. } => KRet::Written { created: *created },
                Ret::Deleted => KRet::Deleted,
                Ret::PreconditionFailed => KRet::Failed,
                Ret::TxnApplied { .. } => KRet::Applied,
            });
        kops.push(KOp {
            call,
            ret,
            optional: *how == Use::Running,
        });
    }
    let (may_be_initial, initial_unknown) = match initial {
        Initial::Absent => (HashSet::new(), false),
        Initial::AnyOf(values) => (values.iter().map(|v| value_id(v)).collect(), true),
    };
    Compiled {
        ops: kops,
        may_be_initial,
        initial_unknown,
    }
}

fn holds(cond: KCond, s: State) -> bool {
    match cond {
        KCond::None => true,
        KCond::Match(v) => s == v,
        KCond::NoneMatchAny => s == ABSENT,
    }
}

/// The model: the successor states of one concrete state `s` under `op`, or none if the
/// answer is impossible from `s`. An answer is a claim about the state it was computed from:
/// 200 v — the value is v; 404 — absent; 201 — absent and the precondition held; 204 on PUT —
/// present and the precondition held; 204 on DELETE — present and the precondition held;
/// 412 — the precondition did not hold. A txn: applied — the condition held, and the key
/// holds its value now; else-branch 200 v — the condition did not hold and the value is v;
/// else-branch not found — the condition did not hold and the key is absent. An unanswered op
/// is whichever of these applies.
fn step_concrete(s: State, op: &KOp, out: &mut Vec<State>) {
    let next = match (op.call, op.ret) {
        (KCall::Get, None) => Some(s),
        (KCall::Get, Some(KRet::Found(v))) => (s == v).then_some(s),
        (KCall::Get, Some(KRet::NotFound)) => (s == ABSENT).then_some(s),
        (KCall::Put(v, c), None) => Some(if holds(c, s) { v } else { s }),
        (KCall::Put(v, c), Some(KRet::Written { created })) => {
            (holds(c, s) && created == (s == ABSENT)).then_some(v)
        }
        (KCall::Put(_, c), Some(KRet::Failed)) => (!holds(c, s)).then_some(s),
        (KCall::Del(c), None) => Some(if s != ABSENT && holds(c, s) {
            ABSENT
        } else {
            s
        }),
        (KCall::Del(c), Some(KRet::Deleted)) => (s != ABSENT && holds(c, s)).then_some(ABSENT),
        (KCall::Del(_), Some(KRet::NotFound)) => (s == ABSENT).then_some(s),
        (KCall::Del(c), Some(KRet::Failed)) => (!holds(c, s)).then_some(s),
        (KCall::Txn(v, c), None) => Some(if holds(c, s) { v } else { s }),
        (KCall::Txn(v, c), Some(KRet::Applied)) => holds(c, s).then_some(v),
        (KCall::Txn(_, c), Some(KRet::Found(v))) => (!holds(c, s) && s == v).then_some(s),
        (KCall::Txn(_, c), Some(KRet::NotFound)) => (!holds(c, s) && s == ABSENT).then_some(s),
        _ => None,
    };
    out.extend(next);
}

/// `UNKNOWN` is "absent, or any value in `may_be_initial`". It is split into the cases the
/// op can tell apart: absent, each value the op names, and "some other value" (for which the
/// state stays `UNKNOWN` — a superset, so the model only gets more permissive, never less).
fn step_unknown(c: &Compiled, op: &KOp, out: &mut Vec<State>) {
    step_concrete(ABSENT, op, out);
    let mut named: Vec<State> = Vec::with_capacity(2);
    if let Some(KRet::Found(v)) = op.ret {
        named.push(v);
    }
    if let KCall::Put(_, KCond::Match(v))
    | KCall::Del(KCond::Match(v))
    | KCall::Txn(_, KCond::Match(v)) = op.call
    {
        named.push(v);
    }
    for &v in &named {
        if c.may_be_initial.contains(&v) {
            step_concrete(v, op, out);
        }
    }
    let others = c
        .may_be_initial
        .iter()
        .filter(|v| !named.contains(v))
        .count();
    if others > 0 {
        // A present value the op does not name: `OTHER` stands in for it (it equals no named
        // value and is not absent); a stand-in left unchanged maps back to UNKNOWN.
        let mark = out.len();
        step_concrete(OTHER, op, out);
        for s in &mut out[mark..] {
            if *s == OTHER {
                *s = UNKNOWN;
            }
        }
    }
}

fn step(c: &Compiled, states: &[State], op: &KOp) -> Vec<State> {
    let mut out = Vec::with_capacity(states.len() + 1);
    for &s in states {
        if s == UNKNOWN {
            step_unknown(c, op, &mut out);
        } else {
            step_concrete(s, op, &mut out);
        }
        if op.optional {
            out.push(s);
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

// ---- The search ---------------------------------------------------------------------------

const NIL: usize = usize::MAX;
const HEAD: usize = 0;

#[derive(Clone, Copy)]
struct Node {
    op: usize,
    is_call: bool,
    /// For a call: its return node.
    mate: usize,
    prev: usize,
    next: usize,
}

/// The events of a history as a doubly linked list in real-time order (calls before returns
/// at equal times, i.e. treated as concurrent), behind a head sentinel.
struct Events {
    nodes: Vec<Node>,
}

impl Events {
    fn new(times: &[(Time, Time)]) -> Events {
        let mut order: Vec<(Time, u8, usize)> = Vec::with_capacity(times.len() * 2);
        for (i, &(inv, ret)) in times.iter().enumerate() {
            order.push((inv, 0, i));
            order.push((ret, 1, i));
        }
        order.sort_unstable();
        let blank = Node {
            op: NIL,
            is_call: false,
            mate: NIL,
            prev: NIL,
            next: NIL,
        };
        let mut nodes = vec![blank; order.len() + 1];
        let mut call_node = vec![NIL; times.len()];
        for (pos, &(_, kind, op)) in order.iter().enumerate() {
            let n = pos + 1;
            nodes[n] = Node {
                op,
                is_call: kind == 0,
                mate: NIL,
                prev: n - 1,
                next: if n < order.len() { n + 1 } else { NIL },
            };
            if kind == 0 {
                call_node[op] = n;
            } else {
                nodes[call_node[op]].mate = n;
            }
        }
        nodes[HEAD].next = if order.is_empty() { NIL } else { 1 };
        Events { nodes }
    }

    fn unlink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = next;
        if next != NIL {
            self.nodes[next].prev = prev;
        }
    }

    fn relink(&mut self, n: usize) {
        let Node { prev, next, .. } = self.nodes[n];
        self.nodes[prev].next = n;
        if next != NIL {
            self.nodes[next].prev = n;
        }
    }

    /// Takes a call and its return out of the list.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        self.unlink(self.nodes[call].mate);
    }

    /// Puts them back, in the reverse order.
    fn unlift(&mut self, call: usize) {
        self.relink(self.nodes[call].mate);
        self.relink(call);
    }
}

fn search(items: &[Item], initial: &Initial, tags: &TagMap, budget: u64) -> Search {
    let compiled = compile(items, initial, tags);
    let times: Vec<(Time, Time)> = items
        .iter()
        .map(|i| {
            let ret = match (i.how, &i.op.ret) {
                (Use::Open, _) | (_, None) => Time::MAX,
                (_, Some((t, _))) => (*t).max(i.op.invoke),
            };
            (i.op.invoke, ret)
        })
        .collect();
    let mut events = Events::new(&times);
    let words = items.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Vec<State>)> = HashSet::new();
    let mut states: Vec<State> = vec![if compiled.initial_unknown {
        UNKNOWN
    } else {
        ABSENT
    }];
    let mut stack: Vec<(usize, Vec<State>)> = Vec::new();
    let mut entry = events.nodes[HEAD].next;
    let mut steps = 0u64;
    while events.nodes[HEAD].next != NIL {
        steps += 1;
        if steps > budget {
            return Search::Unknown;
        }
        let node = events.nodes[entry];
        if node.is_call {
            let next_states = step(&compiled, &states, &compiled.ops[node.op]);
            if !next_states.is_empty() {
                let (w, bit) = (node.op / 64, 1u64 << (node.op % 64));
                linearized[w] |= bit;
                if seen.insert((linearized.clone(), next_states.clone())) {
                    stack.push((entry, std::mem::replace(&mut states, next_states)));
                    events.lift(entry);
                    entry = events.nodes[HEAD].next;
                    continue;
                }
                linearized[w] &= !bit;
            }
            entry = node.next;
        } else {
            // A return whose call is not linearized: undo the last choice.
            let Some((call, prev_states)) = stack.pop() else {
                return Search::Illegal;
            };
            states = prev_states;
            let op = events.nodes[call].op;
            linearized[op / 64] &= !(1u64 << (op % 64));
            events.unlift(call);
            entry = events.nodes[call].next;
        }
    }
    Search::Linearizable
}

// ---- Witness minimization ------------------------------------------------------------------

fn fails(items: &[Item], initial: &Initial, tags: &TagMap, budget: u64) -> bool {
    matches!(search(items, initial, tags, budget), Search::Illegal)
}

/// When the search takes the op to have returned (never, for an open one).
fn ret_time(i: &Item) -> Time {
    match (i.how, &i.op.ret) {
        (Use::Open, _) | (_, None) => Time::MAX,
        (_, Some((t, _))) => *t,
    }
}

fn is_get(i: &Item) -> bool {
    i.op.call == Call::Get
}

/// The history cut at the invocation of `items[k]`: ops invoked before it; those answered at
/// or after it become open (their answer came after the end). Sound: any linearization of
/// the whole history, restricted to these ops, is one of the cut history.
fn prefix(items: &[Item], k: usize) -> Vec<Item> {
    let end = items.get(k).map_or(Time::MAX, |i| i.op.invoke);
    items[..k]
        .iter()
        .filter_map(|i| {
            let mut i = i.clone();
            if ret_time(&i) >= end {
                i.how = Use::Open;
            }
            // An open GET neither constrains nor changes anything.
            (!(i.how == Use::Open && is_get(&i))).then_some(i)
        })
        .collect()
}

/// The history from the invocation of `items[j]` on. Ops that returned before it are dropped:
/// their effect is summarised by the start state, "absent or any value written by an op
/// invoked earlier". Ops still running then are kept, answer unused, free to have taken
/// effect before the start (`Use::Running`); open ones stay open. Sound for the same reason.
fn window(items: &[Item], j: usize) -> (Vec<Item>, Initial) {
    if j == 0 {
        return (items.to_vec(), Initial::Absent);
    }
    let start = items[j].op.invoke;
    let may_be: HashSet<String> = items[..j]
        .iter()
        .filter_map(|i| match &i.op.call {
            Call::Put { value, .. } | Call::Txn { value, .. } => Some(value.clone()),
            _ => None,
        })
        .collect();
    let mut out: Vec<Item> = items[..j]
        .iter()
        .filter(|i| ret_time(i) >= start && !is_get(i))
        .map(|i| {
            let mut i = i.clone();
            if i.how == Use::Answered {
                i.how = Use::Running;
            }
            i
        })
        .collect();
    out.extend_from_slice(&items[j..]);
    (out, Initial::AnyOf(may_be))
}

/// Cuts a failing history to a short failing one: the earliest end (binary search over
/// prefixes), then the latest start (binary search over windows), then drops, one by one,
/// answered ops that change nothing (reads, 404s, 412s, txn else-branches) while it still
/// fails. Every cut only relaxes the history — if the whole history were linearizable, so
/// would the cut one be — so failing is monotone in each cut, and a candidate that fails is a
/// real violation. A search that runs out of budget counts as "does not fail".
fn minimize(items: Vec<Item>, tags: &TagMap, budget: u64) -> (Option<Time>, Vec<Item>) {
    let (mut lo, mut hi) = (1, items.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&prefix(&items, mid), &Initial::Absent, tags, budget) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let cut = prefix(&items, hi);
    let (mut lo, mut hi) = (0, cut.len().saturating_sub(1));
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let (w, init) = window(&cut, mid);
        if fails(&w, &init, tags, budget) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let starts_at = (lo > 0).then(|| cut[lo].op.invoke);
    let (mut w, init) = window(&cut, lo);
    let mut i = 0;
    while i < w.len() {
        let effect_free = w[i].how == Use::Answered
            && matches!(
                w[i].op.ret,
                Some((
                    _,
                    Ret::Found { .. } | Ret::NotFound | Ret::PreconditionFailed
                ))
            );
        if effect_free {
            let mut candidate = w.clone();
            candidate.remove(i);
            if fails(&candidate, &init, tags, budget) {
                w = candidate;
                continue;
            }
        }
        i += 1;
    }
    (starts_at, w)
}

/// Test hook for the soundness of the cuts: on a linearizable history, every prefix and every
/// window of every prefix the minimizer may take must be linearizable too. Returns the first
/// cut that is not.
#[cfg(test)]
pub fn first_failing_cut(mut ops: Vec<Op>, budget: u64) -> Option<String> {
    ops.retain(|o| !(o.call == Call::Get && o.ret.is_none()));
    ops.sort_by_key(|o| o.invoke);
    let Ok(tags) = TagMap::build(&ops) else {
        return Some("tag conflict".to_owned());
    };
    let items = answered(ops);
    for k in 1..=items.len() {
        let p = prefix(&items, k);
        if fails(&p, &Initial::Absent, &tags, budget) {
            return Some(format!("prefix of {k} ops"));
        }
        for j in 1..p.len() {
            let (w, init) = window(&p, j);
            if fails(&w, &init, &tags, budget) {
                return Some(format!("window from op {j} of the prefix of {k} ops"));
            }
        }
    }
    None
}
