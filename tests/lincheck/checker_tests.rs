//! The checker on hand-written histories: linearizable ones pass, corrupted ones fail with a
//! short witness, and a search out of budget never says "linearizable".

use super::checker::{self, DEFAULT_BUDGET, KeyResult, Outcome};
use super::history::{Call, Cond, History, Op, Ret, Time};
use super::workload::Rng;

const K: &str = "k";

fn op(client: usize, (inv, ret): (Time, Option<Time>), call: Call, r: Option<Ret>) -> Op {
    Op {
        client,
        key: K.to_owned(),
        call,
        invoke: inv,
        ret: match (ret, r) {
            (Some(t), Some(r)) => Some((t, r)),
            _ => None,
        },
    }
}

fn t(inv: Time, ret: Time) -> (Time, Option<Time>) {
    (inv, Some(ret))
}

/// Sent at `inv`, never answered.
fn pending(inv: Time) -> (Time, Option<Time>) {
    (inv, None)
}

fn get(c: usize, at: (Time, Option<Time>), found: Option<(&str, &str)>) -> Op {
    let r = match found {
        Some((value, etag)) => Ret::Found {
            value: value.into(),
            etag: etag.into(),
        },
        None => Ret::NotFound,
    };
    op(c, at, Call::Get, Some(r))
}

fn put_with(c: usize, at: (Time, Option<Time>), value: &str, cond: Cond, r: Option<Ret>) -> Op {
    op(
        c,
        at,
        Call::Put {
            value: value.into(),
            cond,
        },
        r,
    )
}

fn written(created: bool, etag: &str) -> Option<Ret> {
    Some(Ret::Written {
        created,
        etag: etag.into(),
    })
}

fn put(c: usize, at: (Time, Option<Time>), value: &str, created: bool, etag: &str) -> Op {
    put_with(c, at, value, Cond::None, written(created, etag))
}

fn cas(c: usize, at: (Time, Option<Time>), value: &str, tag: &str, r: Option<Ret>) -> Op {
    put_with(c, at, value, Cond::IfMatch(tag.into()), r)
}

fn create(c: usize, at: (Time, Option<Time>), value: &str, r: Option<Ret>) -> Op {
    put_with(c, at, value, Cond::IfNoneMatchAny, r)
}

fn del(c: usize, at: (Time, Option<Time>), cond: Cond, r: Option<Ret>) -> Op {
    op(c, at, Call::Delete { cond }, r)
}

fn txn(c: usize, at: (Time, Option<Time>), value: &str, cond: Cond, r: Option<Ret>) -> Op {
    op(
        c,
        at,
        Call::Txn {
            value: value.into(),
            cond,
        },
        r,
    )
}

fn if_tag(tag: &str) -> Cond {
    Cond::IfMatch(tag.into())
}

fn applied(etag: &str) -> Option<Ret> {
    Some(Ret::TxnApplied { etag: etag.into() })
}

fn else_found(value: &str, etag: &str) -> Option<Ret> {
    Some(Ret::Found {
        value: value.into(),
        etag: etag.into(),
    })
}

fn check(ops: Vec<Op>) -> Outcome {
    checker::check(
        &History {
            ops,
            events: Vec::new(),
        },
        DEFAULT_BUDGET,
    )
}

fn assert_ok(ops: Vec<Op>) {
    let out = check(ops);
    assert!(out.is_linearizable(), "expected linearizable:\n{out}");
}

fn assert_violation(ops: Vec<Op>) -> checker::Witness {
    let out = check(ops);
    assert!(out.is_violation(), "expected a violation:\n{out}");
    let w = out.witnesses().next().expect("one witness").clone();
    println!("{w}");
    w
}

#[test]
fn sequential_history_of_every_kind_of_op_is_linearizable() {
    assert_ok(vec![
        get(1, t(0, 1), None),
        put(1, t(2, 3), "v1", true, "e1"),
        get(2, t(4, 5), Some(("v1", "e1"))),
        cas(2, t(6, 7), "v2", "e1", written(false, "e2")),
        cas(1, t(8, 9), "v3", "e1", Some(Ret::PreconditionFailed)),
        create(1, t(10, 11), "v4", Some(Ret::PreconditionFailed)),
        del(
            1,
            t(12, 13),
            Cond::IfMatch("e1".into()),
            Some(Ret::PreconditionFailed),
        ),
        del(2, t(14, 15), Cond::IfMatch("e2".into()), Some(Ret::Deleted)),
        del(2, t(16, 17), Cond::None, Some(Ret::NotFound)),
        get(1, t(18, 19), None),
        create(1, t(20, 21), "v5", written(true, "e5")),
        put(2, t(22, 23), "v6", false, "e6"),
        del(1, t(24, 25), Cond::None, Some(Ret::Deleted)),
        cas(1, t(26, 27), "v7", "e6", Some(Ret::PreconditionFailed)),
    ]);
}

#[test]
fn concurrent_ops_may_take_effect_in_any_order_within_their_intervals() {
    assert_ok(vec![
        // A read that overlaps a write may see it or not.
        put(1, t(0, 10), "v1", true, "e1"),
        get(2, t(1, 2), Some(("v1", "e1"))),
        get(3, t(1, 3), None),
        // Two racing CAS on the same tag: one wins, one 412s, whichever was sent first.
        cas(1, t(20, 30), "v2", "e1", Some(Ret::PreconditionFailed)),
        cas(2, t(21, 29), "v3", "e1", written(false, "e3")),
        get(3, t(31, 32), Some(("v3", "e3"))),
        // Racing create-only PUTs after a delete: exactly one creates.
        del(1, t(40, 41), Cond::None, Some(Ret::Deleted)),
        create(1, t(42, 50), "v4", Some(Ret::PreconditionFailed)),
        create(2, t(43, 51), "v5", written(true, "e5")),
        get(3, t(52, 53), Some(("v5", "e5"))),
    ]);
}

#[test]
fn an_unanswered_write_may_take_effect_late_or_never() {
    // Seen, at any time after its call.
    assert_ok(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        put_with(2, pending(2), "v2", Cond::None, None),
        get(3, t(3, 4), Some(("v1", "e1"))),
        get(3, t(50, 51), Some(("v2", "e2"))),
        get(1, t(60, 61), Some(("v2", "e2"))),
    ]);
    // Never seen.
    assert_ok(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        put_with(2, pending(2), "v2", Cond::None, None),
        del(2, pending(3), Cond::IfMatch("e1".into()), None),
        get(3, t(50, 51), Some(("v1", "e1"))),
    ]);
}

#[test]
fn a_read_of_a_value_never_written_fails() {
    let w = assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        get(2, t(2, 3), Some(("v-never-written", "e9"))),
    ]);
    assert_eq!(w.key, K);
    assert!(w.ops().any(|o| matches!(
        &o.ret,
        Some((_, Ret::Found { value, .. })) if value == "v-never-written"
    )));
}

#[test]
fn a_stale_read_after_an_acknowledged_overwrite_fails() {
    assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        put(2, t(2, 3), "v2", false, "e2"),
        get(3, t(4, 5), Some(("v1", "e1"))),
    ]);
}

#[test]
fn a_cas_that_succeeded_against_an_overwritten_tag_fails() {
    assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        put(2, t(2, 3), "v2", false, "e2"),
        cas(1, t(4, 5), "v3", "e1", written(false, "e3")),
    ]);
}

#[test]
fn a_lost_acknowledged_write_after_a_restart_fails() {
    let w = assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        get(2, t(100, 101), None),
    ]);
    assert_eq!(w.items.len(), 2, "{w}");
}

/// A crash witness seen on sled: a create-only PUT, unanswered (the server was killed), whose
/// value another client read; after the restart the key does not exist.
#[test]
fn an_unanswered_create_that_was_read_then_vanished_fails() {
    assert_violation(vec![
        create(1, pending(0), "v1", None),
        get(2, t(1, 2), Some(("v1", "e1"))),
        get(2, t(10, 11), None),
    ]);
}

/// Another crash witness: a CAS's value is read by another client, then the crash rolls
/// the CAS back and an `If-Match` with the old ETag succeeds.
#[test]
fn a_cas_read_by_another_client_then_rolled_back_fails() {
    assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        cas(1, pending(2), "v2", "e1", None),
        get(2, t(3, 4), Some(("v2", "e2"))),
        cas(3, t(10, 11), "v3", "e1", written(false, "e3")),
    ]);
}

#[test]
fn answers_that_misstate_the_state_fail() {
    // 204 "replaced" on a key that was absent.
    assert_violation(vec![put(1, t(0, 1), "v1", false, "e1")]);
    // create-only refused on an absent key.
    assert_violation(vec![create(
        1,
        t(0, 1),
        "v1",
        Some(Ret::PreconditionFailed),
    )]);
    // DELETE 404 on a present key.
    assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        del(2, t(2, 3), Cond::None, Some(Ret::NotFound)),
    ]);
    // An unconditional PUT cannot 412.
    assert_violation(vec![put_with(
        1,
        t(0, 1),
        "v1",
        Cond::None,
        Some(Ret::PreconditionFailed),
    )]);
}

#[test]
fn one_etag_for_two_values_fails() {
    let w = assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        put(2, t(2, 3), "v2", false, "e1"),
    ]);
    assert!(w.reason.contains("names two values"), "{w}");
}

#[test]
fn txns_mixed_with_every_other_op_in_sequence_are_linearizable() {
    assert_ok(vec![
        txn(1, t(0, 1), "v1", Cond::IfNoneMatchAny, applied("e1")),
        get(2, t(2, 3), Some(("v1", "e1"))),
        txn(
            2,
            t(4, 5),
            "v2",
            Cond::IfNoneMatchAny,
            else_found("v1", "e1"),
        ),
        txn(2, t(6, 7), "v3", if_tag("e1"), applied("e3")),
        txn(1, t(8, 9), "v4", if_tag("e1"), else_found("v3", "e3")),
        cas(1, t(10, 11), "v5", "e3", written(false, "e5")),
        txn(2, t(12, 13), "v6", if_tag("e3"), else_found("v5", "e5")),
        del(1, t(14, 15), Cond::None, Some(Ret::Deleted)),
        txn(2, t(16, 17), "v7", if_tag("e5"), Some(Ret::NotFound)),
        create(1, t(18, 19), "v8", written(true, "e8")),
        txn(1, t(20, 21), "v9", Cond::None, applied("e9")),
        get(2, t(22, 23), Some(("v9", "e9"))),
    ]);
}

#[test]
fn racing_txns_and_unanswered_txns_are_linearizable() {
    assert_ok(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        // Two txns on the same ETag, overlapping: one applies, the other's get sees its value.
        txn(1, t(10, 20), "v2", if_tag("e1"), else_found("v3", "e3")),
        txn(2, t(11, 19), "v3", if_tag("e1"), applied("e3")),
        // A CAS racing a txn: the txn went first.
        cas(1, t(30, 40), "v4", "e3", Some(Ret::PreconditionFailed)),
        txn(2, t(31, 39), "v5", if_tag("e3"), applied("e5")),
        // Unanswered: one takes effect late (read at 60), one never.
        txn(3, pending(41), "v6", if_tag("e5"), None),
        txn(4, pending(42), "v7", Cond::IfNoneMatchAny, None),
        get(1, t(50, 51), Some(("v5", "e5"))),
        get(1, t(60, 61), Some(("v6", "e6"))),
    ]);
}

/// No concurrency at all: the ETag the txn compares was replaced before it was sent.
#[test]
fn a_txn_applied_against_an_overwritten_tag_fails() {
    assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        put(2, t(2, 3), "v2", false, "e2"),
        txn(1, t(4, 5), "v3", if_tag("e1"), applied("e3")),
    ]);
}

#[test]
fn a_txn_else_get_of_a_value_no_longer_current_fails() {
    // Stale: v1 was replaced before the txn was sent.
    assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        put(2, t(2, 3), "v2", false, "e2"),
        txn(1, t(4, 5), "v3", if_tag("e9"), else_found("v1", "e1")),
    ]);
    // Never written at all.
    let w = assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        txn(
            1,
            t(4, 5),
            "v3",
            if_tag("e9"),
            else_found("v-never", "e-never"),
        ),
    ]);
    assert!(w.ops().any(|o| matches!(o.call, Call::Txn { .. })), "{w}");
}

#[test]
fn txn_answers_that_misstate_the_condition_fail() {
    // The else-branch ran, yet the get found the very value the condition names.
    assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        txn(2, t(2, 3), "v2", if_tag("e1"), else_found("v1", "e1")),
    ]);
    // exists:false applied on a present key.
    assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        txn(2, t(2, 3), "v2", Cond::IfNoneMatchAny, applied("e2")),
    ]);
    // exists:false refused on an absent key.
    assert_violation(vec![txn(
        1,
        t(0, 1),
        "v1",
        Cond::IfNoneMatchAny,
        Some(Ret::NotFound),
    )]);
    // The else-get found nothing on a present key.
    assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        txn(2, t(2, 3), "v2", if_tag("e9"), Some(Ret::NotFound)),
    ]);
    // A txn's write lost: applied, then an older value is read.
    assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        txn(2, t(2, 3), "v2", if_tag("e1"), applied("e2")),
        get(3, t(4, 5), Some(("v1", "e1"))),
    ]);
}

/// The crash witness of `a_cas_read_by_another_client_then_rolled_back_fails`, with a txn.
#[test]
fn an_unanswered_txn_read_by_another_client_then_rolled_back_fails() {
    assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        txn(1, pending(2), "v2", if_tag("e1"), None),
        get(2, t(3, 4), Some(("v2", "e2"))),
        txn(3, t(10, 11), "v3", if_tag("e1"), applied("e3")),
    ]);
}

#[test]
fn a_txn_etag_that_names_two_values_fails() {
    let w = assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        txn(2, t(2, 3), "v2", if_tag("e1"), applied("e1")),
    ]);
    assert!(w.reason.contains("names two values"), "{w}");
    // An else-get that ties a written value to a second ETag.
    let w = assert_violation(vec![
        put(1, t(0, 1), "v1", true, "e1"),
        txn(2, t(2, 3), "v2", if_tag("e9"), else_found("v1", "e7")),
    ]);
    assert!(w.reason.contains("two ETags"), "{w}");
}

/// The witness is cut short around a txn too, and shows it.
#[test]
fn a_txn_witness_is_cut_to_the_few_ops_that_matter() {
    let mut ops = Vec::new();
    for i in 0..100u64 {
        let (v, e) = (format!("v{i}"), format!("e{i}"));
        ops.push(put(1, t(4 * i, 4 * i + 1), &v, i == 0, &e));
        ops.push(get(2, t(4 * i + 2, 4 * i + 3), Some((&v, &e))));
    }
    ops.push(txn(
        3,
        t(1000, 1001),
        "late",
        if_tag("e50"),
        applied("e-late"),
    ));
    let w = assert_violation(ops);
    assert!(w.items.len() <= 3, "{w}");
    assert!(w.ops().any(|o| matches!(o.call, Call::Txn { .. })), "{w}");
    let text = w.to_string();
    assert!(
        text.contains("TXN if k etag e50 then PUT \"late\" else GET -> applied"),
        "{text}"
    );
}

#[test]
fn keys_are_checked_independently_and_the_witness_names_the_failing_key() {
    let mut ops = Vec::new();
    for (i, key) in ["a", "b", "c"].iter().enumerate() {
        let base = i as Time;
        let mut p = put(
            1,
            t(base, base + 10),
            &format!("{key}1"),
            true,
            &format!("{key}e1"),
        );
        p.key = key.to_string();
        ops.push(p);
        let mut g = get(
            2,
            t(base + 20, base + 21),
            Some((&format!("{key}1"), &format!("{key}e1"))),
        );
        g.key = key.to_string();
        ops.push(g);
    }
    assert!(check(ops.clone()).is_linearizable());
    // Key b loses its write.
    ops[3].ret = Some((22, Ret::NotFound));
    let out = check(ops);
    let failing: Vec<_> = out.witnesses().map(|w| w.key.clone()).collect();
    assert_eq!(failing, vec!["b".to_owned()], "{out}");
}

#[test]
fn the_witness_is_cut_to_the_few_ops_that_matter() {
    let mut ops = Vec::new();
    for i in 0..200u64 {
        let (v, e) = (format!("v{i}"), format!("e{i}"));
        ops.push(put(1, t(4 * i, 4 * i + 1), &v, i == 0, &e));
        ops.push(get(2, t(4 * i + 2, 4 * i + 3), Some((&v, &e))));
    }
    ops.push(get(3, t(1000, 1001), Some(("v50", "e50"))));
    let w = assert_violation(ops);
    assert!(w.items.len() <= 3, "{w}");
    assert!(w.starts_at.is_some(), "{w}");
    assert_eq!(w.total_ops, 401);
    assert!(w.ops().any(|o| o.invoke == 1000), "{w}");
}

#[test]
fn out_of_budget_is_unknown_never_linearizable() {
    let ops = vec![
        put(1, t(0, 10), "v1", true, "e1"),
        get(2, t(1, 2), Some(("v1", "e1"))),
        get(3, t(1, 3), None),
    ];
    let out = checker::check(
        &History {
            ops,
            events: Vec::new(),
        },
        1,
    );
    assert!(!out.is_linearizable(), "{out}");
    assert!(!out.is_violation(), "{out}");
    assert!(matches!(out.keys[0].result, KeyResult::Unknown), "{out}");
}

/// A linearizable history by construction: each op takes effect atomically at a random point
/// inside its interval on a simulated store (unanswered ops take effect or not, at random),
/// clients are sequential, and conditions use only ETags some answer revealed.
fn simulated_history(rng: &mut Rng, clients: usize, ops_per_client: usize) -> Vec<Op> {
    struct Planned {
        client: usize,
        invoke: Time,
        point: Time,
        ret: Time,
    }
    let mut planned = Vec::new();
    for c in 0..clients {
        let mut t = rng.below(5);
        for _ in 0..ops_per_client {
            let invoke = t;
            let point = invoke + rng.below(6);
            let ret = point + rng.below(6);
            planned.push(Planned {
                client: c,
                invoke,
                point,
                ret,
            });
            t = ret + 1 + rng.below(3);
        }
    }
    planned.sort_by_key(|p| (p.point, p.client));
    let mut state: Option<(String, String)> = None;
    let mut revealed: Vec<String> = Vec::new();
    let mut version = 0u64;
    let mut ops = Vec::new();
    for (n, p) in planned.iter().enumerate() {
        let cond = match rng.below(3) {
            0 => Cond::None,
            1 if !revealed.is_empty() => {
                Cond::IfMatch(revealed[rng.below(revealed.len() as u64) as usize].clone())
            }
            _ => Cond::IfNoneMatchAny,
        };
        let holds = match &cond {
            Cond::None => true,
            Cond::IfMatch(tag) => state.as_ref().is_some_and(|(_, t)| t == tag),
            Cond::IfNoneMatchAny => state.is_none(),
        };
        let answered = rng.below(8) != 0;
        let applies = answered || rng.below(2) == 0;
        let (call, ret) = match rng.below(4) {
            0 => {
                let r = match &state {
                    Some((v, t)) => Ret::Found {
                        value: v.clone(),
                        etag: t.clone(),
                    },
                    None => Ret::NotFound,
                };
                (Call::Get, r)
            }
            1 => {
                let value = format!("v{n}");
                let r = if holds {
                    version += 1;
                    let etag = format!("\"{version}\"");
                    let created = state.is_none();
                    if applies {
                        state = Some((value.clone(), etag.clone()));
                    }
                    Ret::Written { created, etag }
                } else {
                    Ret::PreconditionFailed
                };
                (Call::Put { value, cond }, r)
            }
            2 => {
                let value = format!("v{n}");
                let r = if holds {
                    version += 1;
                    let etag = format!("\"{version}\"");
                    if applies {
                        state = Some((value.clone(), etag.clone()));
                    }
                    Ret::TxnApplied { etag }
                } else {
                    match &state {
                        Some((v, t)) => Ret::Found {
                            value: v.clone(),
                            etag: t.clone(),
                        },
                        None => Ret::NotFound,
                    }
                };
                (Call::Txn { value, cond }, r)
            }
            _ => {
                let cond = if cond == Cond::IfNoneMatchAny {
                    Cond::None
                } else {
                    cond
                };
                let holds = match &cond {
                    Cond::IfMatch(tag) => state.as_ref().is_some_and(|(_, t)| t == tag),
                    _ => true,
                };
                let r = match (&state, holds) {
                    (None, _) => Ret::NotFound,
                    (Some(_), false) => Ret::PreconditionFailed,
                    (Some(_), true) => {
                        if applies {
                            state = None;
                        }
                        Ret::Deleted
                    }
                };
                (Call::Delete { cond }, r)
            }
        };
        if answered {
            if let Ret::Found { etag, .. } | Ret::Written { etag, .. } | Ret::TxnApplied { etag } =
                &ret
            {
                revealed.push(etag.clone());
            }
        }
        ops.push(Op {
            client: p.client,
            key: K.to_owned(),
            call,
            invoke: p.invoke,
            ret: answered.then_some((p.ret, ret)),
        });
    }
    ops
}

/// Soundness: simulated linearizable histories pass, and so does every cut of them the witness
/// minimizer may take (a failing cut would make a false witness).
#[test]
fn simulated_linearizable_histories_and_all_their_cuts_pass() {
    let seed = super::workload::seed();
    let mut rng = Rng::new(seed);
    for round in 0..60 {
        let clients = 2 + (round % 3);
        let ops = simulated_history(&mut rng, clients, 8);
        let out = check(ops.clone());
        assert!(
            out.is_linearizable(),
            "seed {seed} round {round}: simulated history rejected:\n{out}\n{ops:#?}"
        );
        if let Some(cut) = checker::first_failing_cut(ops.clone(), DEFAULT_BUDGET) {
            panic!("seed {seed} round {round}: the {cut} fails:\n{ops:#?}");
        }
    }
}
