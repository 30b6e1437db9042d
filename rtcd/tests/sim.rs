//! The call core in memory (`rtcd::sim`): real str0m client peers and the `Sfu` on a simulated
//! clock. Signaling, the data channel lock, the offer and answer timeouts, simulcast layer
//! control behind a bottleneck, leaving, and a panic in one session, each in well under a
//! second of wall clock per simulated second.
#![allow(clippy::unwrap_used)] // test crate: a failed unwrap is a failed test

use std::time::Duration;

use rtcd::{
    call::Faults,
    protocol::dc::DcMessage,
    sim::{Behaviour, KeyframeClock, Sim},
};

const TALK: Behaviour = Behaviour {
    talking: true,
    offers: true,
    ignores_offers: false,
    shares_screen: false,
};

/// Silent, and leaves server offers unanswered.
const HOLDS_OFFERS: Behaviour = Behaviour {
    talking: false,
    ignores_offers: true,
    ..TALK
};

/// Silent, and shares its screen.
const SHARES: Behaviour = Behaviour {
    talking: false,
    shares_screen: true,
    ..TALK
};

/// Silent: only watches and listens.
const WATCHES: Behaviour = Behaviour {
    talking: false,
    ..TALK
};

/// A (holding offers) joins, then B (talking) 1 s later; 2 s on, A has B's offer unanswered.
fn offer_held_by_a(sim: &mut Sim) -> (usize, usize) {
    let a = sim.join("call", "ua", HOLDS_OFFERS).unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    let b = sim.join("call", "ub", TALK).unwrap();
    sim.run_for(Duration::from_secs(2)).unwrap();
    assert_eq!(sim.clients[a].server_offers, 1, "B's voice is offered to A");
    (a, b)
}

fn metric(sim: &Sim, series: &str) -> u64 {
    let text = sim.metrics.encode().unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .map_or(0, |v| v as u64)
}

/// Everyone in `members` heard every other member at least `min` times since `before`.
fn heard_each_other(sim: &Sim, members: &[usize], before: &[u64], min: u64) {
    for &i in members {
        for &j in members.iter().filter(|j| **j != i) {
            let tag = sim.clients[j].tag;
            let now = sim.clients[i].received.get(&tag).copied().unwrap_or(0);
            let was = before.get(i * 256 + usize::from(tag)).copied().unwrap_or(0);
            assert!(
                now - was >= min,
                "client {i} heard client {j} only {} times (want {min}): {:?}",
                now - was,
                sim.clients[i].received
            );
        }
    }
}

fn snapshot(sim: &Sim) -> Vec<u64> {
    let mut v = vec![0; sim.clients.len() * 256];
    for (i, c) in sim.clients.iter().enumerate() {
        for (tag, n) in &c.received {
            v[i * 256 + usize::from(*tag)] = *n;
        }
    }
    v
}

/// Joins `n` talkers to `call`, `gap` apart.
fn join_all(sim: &mut Sim, call: &str, n: usize, gap: Duration) -> Vec<usize> {
    (0..n)
        .map(|i| {
            let c = sim.join(call, &format!("{call}-u{i}"), TALK).unwrap();
            sim.run_for(gap).unwrap();
            c
        })
        .collect()
}

#[test]
fn join_offer_answer_media_and_no_packet_crosses_calls() {
    let mut sim = Sim::new(Faults::default());
    // All at the same instant: their offers, answers and first packets cross.
    let a = join_all(&mut sim, "call-a", 3, Duration::ZERO);
    let b = join_all(&mut sim, "call-b", 2, Duration::ZERO);
    sim.run_for(Duration::from_secs(3)).unwrap();
    for &i in a.iter().chain(&b) {
        assert!(sim.clients[i].connected, "client {i} never connected");
        assert!(!sim.clients[i].closed);
    }
    // 3 s of 20 ms packets, less the set-up.
    heard_each_other(&sim, &a, &[], 100);
    heard_each_other(&sim, &b, &[], 100);
    for (members, others) in [(&a, &b), (&b, &a)] {
        for &i in members {
            let c = &sim.clients[i];
            assert_eq!(
                c.received.get(&c.tag),
                None,
                "client {i} got its own packets back"
            );
            for &o in others {
                assert_eq!(
                    c.received.get(&sim.clients[o].tag),
                    None,
                    "client {i} heard client {o} of another call"
                );
            }
        }
    }
    assert_eq!(metric(&sim, r#"rtcd_rtc_sessions_total{groupID="sim-group"}"#), 5);
    // Each joiner after the first gets one server offer per publisher already there (batched).
    assert!(sim.clients[a[2]].server_offers >= 1);
}

#[test]
fn a_session_without_an_offer_is_closed_after_10_seconds() {
    let mut sim = Sim::new(Faults::default());
    let silent = Behaviour {
        offers: false,
        ..TALK
    };
    let i = sim.join("call", "u", silent).unwrap();
    sim.run_for(Duration::from_millis(9_900)).unwrap();
    assert!(!sim.clients[i].closed, "closed before 10 s");
    sim.run_for(Duration::from_millis(200)).unwrap();
    assert!(sim.clients[i].closed, "not closed 10.1 s after the join");
    assert_eq!(
        metric(
            &sim,
            r#"rtcd_rtc_errors_total{groupID="sim-group",type="signaling"}"#
        ),
        1
    );
    assert_eq!(sim.sfu.session_count(), 0);
}

#[test]
fn an_unanswered_server_offer_is_offered_again_then_the_session_closed() {
    let mut sim = Sim::new(Faults::default());
    let (a, b) = offer_held_by_a(&mut sim);
    // 10 s without an answer: offered again (a fresh offer), and counted.
    sim.run_for(Duration::from_secs(9)).unwrap();
    assert_eq!(sim.clients[a].server_offers, 2);
    assert_eq!(
        metric(
            &sim,
            r#"rtcd_rtc_errors_total{groupID="sim-group",type="signaling_lock_timeout"}"#
        ),
        1
    );
    // Three unanswered offers close the session; B is not affected.
    sim.run_for(Duration::from_secs(21)).unwrap();
    assert!(sim.clients[a].closed, "A still open after 3 unanswered offers");
    assert!(!sim.clients[b].closed);
    assert_eq!(sim.sfu.session_count(), 1);
}

#[test]
fn a_late_answer_brings_the_media() {
    let mut sim = Sim::new(Faults::default());
    let (a, b) = offer_held_by_a(&mut sim);
    assert_eq!(sim.clients[a].received_total(), 0);
    sim.answer_held(a).unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    let tag = sim.clients[b].tag;
    assert!(sim.clients[a].received.get(&tag).copied().unwrap_or(0) > 20);
}

#[test]
fn the_data_channel_lock_holds_server_offers_until_unlock_and_refuses_glare() {
    let mut sim = Sim::new(Faults::default());
    let a = sim
        .join(
            "call",
            "ua",
            Behaviour {
                talking: false,
                ..TALK
            },
        )
        .unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    sim.client_dc(a, &DcMessage::Lock(None)).unwrap();
    sim.run_for(Duration::from_millis(50)).unwrap();
    assert!(sim.clients[a].dc_messages.contains(&DcMessage::Lock(Some(true))));
    // B publishes while A holds the lock: no offer for A until it unlocks.
    let b = sim.join("call", "ub", TALK).unwrap();
    sim.run_for(Duration::from_secs(2)).unwrap();
    assert_eq!(
        sim.clients[a].server_offers, 0,
        "offered while the client held the lock"
    );
    sim.client_dc(a, &DcMessage::Unlock).unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(sim.clients[a].server_offers, 1);
    let tag = sim.clients[b].tag;
    assert!(sim.clients[a].received.get(&tag).copied().unwrap_or(0) > 20);

    // Glare: with a server offer outstanding, the client's Lock is refused.
    let c = sim.join("call", "uc", HOLDS_OFFERS).unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    assert_eq!(sim.clients[c].server_offers, 1);
    sim.client_dc(c, &DcMessage::Lock(None)).unwrap();
    sim.run_for(Duration::from_millis(50)).unwrap();
    assert!(
        sim.clients[c].dc_messages.contains(&DcMessage::Lock(Some(false))),
        "{:?}",
        sim.clients[c].dc_messages
    );
}

#[test]
fn a_leaver_is_renegotiated_away_and_the_others_go_on() {
    let mut sim = Sim::new(Faults::default());
    let ids = join_all(&mut sim, "call", 3, Duration::from_millis(20));
    sim.run_for(Duration::from_secs(2)).unwrap();
    let offers_before = sim.clients[ids[0]].server_offers;
    sim.leave(ids[1]).unwrap();
    assert!(sim.clients[ids[1]].closed, "no close for the leaver");
    let before = snapshot(&sim);
    sim.run_for(Duration::from_secs(2)).unwrap();
    assert!(
        sim.clients[ids[0]].server_offers > offers_before,
        "the track was not removed"
    );
    heard_each_other(&sim, &[ids[0], ids[2]], &before, 80);
    assert_eq!(metric(&sim, r#"rtcd_rtc_sessions_total{groupID="sim-group"}"#), 2);
}

/// Needs the `fault-injection` feature (on in `make test`).
#[cfg(feature = "fault-injection")]
#[test]
fn a_panic_in_one_session_drops_only_that_session() {
    let mut sim = Sim::new(Faults {
        panic_user: Some("boom".into()),
        ..Faults::default()
    });
    let a = sim.join("call", "ua", TALK).unwrap();
    let b = sim.join("call", "ub", TALK).unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    let c = sim.join("call", "boom", TALK).unwrap();
    sim.run_for(Duration::from_secs(1)).unwrap();
    assert!(sim.clients[c].closed, "the panicking session was not closed");
    assert_eq!(
        metric(&sim, r#"rtcd_rtc_errors_total{groupID="sim-group",type="panic"}"#),
        1
    );
    let before = snapshot(&sim);
    sim.run_for(Duration::from_secs(2)).unwrap();
    heard_each_other(&sim, &[a, b], &before, 80);
    assert_eq!(sim.sfu.session_count(), 2);
}

/// Screen packets a viewer got from the sharer in each layer during `d` of simulated time.
fn screen_during(sim: &mut Sim, viewer: usize, sharer: usize, d: Duration) -> (u64, u64) {
    let tag = sim.clients[sharer].tag;
    let v = &sim.clients[viewer];
    let (h0, l0) = (v.screen_packets(tag, b'h'), v.screen_packets(tag, b'l'));
    sim.run_for(d).unwrap();
    let v = &sim.clients[viewer];
    (v.screen_packets(tag, b'h') - h0, v.screen_packets(tag, b'l') - l0)
}

/// A screen viewer whose downlink narrows to 400 kbit/s (the high layer needs about 1.1)
/// is moved to the low layer, which then gets through; a second viewer on a free link keeps the
/// high layer all along; when the bottleneck goes, the first viewer climbs back to high.
#[test]
fn a_screen_viewer_behind_a_bottleneck_moves_to_the_low_layer_and_back() {
    let mut sim = Sim::new(Faults::default());
    let sharer = sim.join("call", "sharer", SHARES).unwrap();
    sim.run_for(Duration::from_millis(200)).unwrap();
    let narrow = sim.join("call", "narrow", WATCHES).unwrap();
    let wide = sim.join("call", "wide", WATCHES).unwrap();
    sim.run_for(Duration::from_secs(5)).unwrap();

    // A free link: both viewers take the high layer (30 frames of 4 packets a second).
    for v in [narrow, wide] {
        let (h, l) = screen_during(&mut sim, v, sharer, Duration::from_secs(2));
        assert!(h >= 150 && l == 0, "viewer {v} on a free link: high {h}, low {l}");
    }

    sim.set_downlink(narrow, Some(400_000)).unwrap();
    sim.run_for(Duration::from_secs(6)).unwrap();
    assert!(
        metric(
            &sim,
            r#"rtcd_rtc_layer_switches_total{groupID="sim-group",layer="l"}"#
        ) >= 1,
        "no switch to the low layer was counted"
    );
    let (h, l) = screen_during(&mut sim, narrow, sharer, Duration::from_secs(3));
    assert!(
        h == 0 && l >= 60,
        "behind 400 kbit/s the viewer should get the low layer only: high {h}, low {l}"
    );
    let (h, l) = screen_during(&mut sim, wide, sharer, Duration::from_secs(1));
    assert!(
        h >= 80 && l == 0,
        "the viewer on a free link left high: high {h}, low {l}"
    );
    let dropped = sim.clients[narrow].downlink_dropped;

    sim.set_downlink(narrow, None).unwrap();
    let mut back = None;
    for second in 0..30 {
        let (h, _) = screen_during(&mut sim, narrow, sharer, Duration::from_secs(1));
        if h >= 80 {
            back = Some(second);
            break;
        }
    }
    assert!(
        back.is_some(),
        "the viewer never climbed back to the high layer in 30 s"
    );
    assert!(
        dropped > 0,
        "the bottleneck never dropped anything: it was not a bottleneck"
    );
    for c in &sim.clients {
        assert!(!c.closed && !c.dead, "{} lost its session", c.user);
    }
}

/// A viewer who starts watching while the sharer's latest keyframe is young gets that keyframe
/// and what followed it at once, from the server's buffer: its first packets arrive before any
/// keyframe request has gone to the sharer (without the buffer, the viewer waits for a
/// requested one).
#[test]
fn a_new_viewer_starts_on_the_buffered_keyframe_without_asking_for_one() {
    let mut sim = Sim::new(Faults::default());
    let sharer = sim.join("call", "sharer", SHARES).unwrap();
    // The sharer's first keyframe goes out as its share starts; the viewer comes 300 ms later,
    // well before the next one (every 3 s).
    sim.run_for(Duration::from_millis(300)).unwrap();
    let viewer = sim.join("call", "viewer", WATCHES).unwrap();
    let tag = sim.clients[sharer].tag;
    let requests = |sim: &Sim| {
        metric(
            sim,
            r#"rtcd_rtc_keyframe_requests_total{groupID="sim-group",direction="out"}"#,
        )
    };
    let mut first = None;
    for step in 0..200 {
        sim.run_for(Duration::from_millis(5)).unwrap();
        let v = &sim.clients[viewer];
        if v.screen_packets(tag, b'h') + v.screen_packets(tag, b'l') > 0 {
            first = Some((step, requests(&sim)));
            break;
        }
    }
    let Some((step, asked)) = first else {
        panic!("the viewer got no screen packet within 1 s of joining");
    };
    assert_eq!(
        asked,
        0,
        "the viewer's first screen packets came {} ms after it joined, after {asked} keyframe request(s)",
        (step + 1) * 5
    );
}

#[test]
fn a_keyframe_clock_sends_the_first_frame_asked_frames_and_one_every_period() {
    let t0 = std::time::Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut k = KeyframeClock::new(Duration::from_secs(3));
    assert!(k.next_is_key(ms(0)), "the first frame");
    assert!(!k.next_is_key(ms(33)));
    k.request();
    assert!(k.next_is_key(ms(66)), "asked for");
    assert!(!k.next_is_key(ms(100)));
    assert!(
        !k.next_is_key(ms(3065)),
        "3 s after the last keyframe, not the first"
    );
    assert!(k.next_is_key(ms(3066)));
}

#[test]
fn spoofed_checks_can_move_a_sessions_remote_address_only_at_a_bounded_rate() {
    // pion/ice#21: a peer that knows its ICE password can replay its own (valid) check with a
    // spoofed source, so that media goes to a victim. Each new address is rate-limited: a
    // burst for a client's own candidates, then one per 5 s, 32 in all.
    let mut sim = Sim::new(Faults::default());
    let members = join_all(&mut sim, "call", 2, Duration::ZERO);
    sim.run_for(Duration::from_secs(2)).unwrap();
    heard_each_other(&sim, &members, &[], 50);
    let check = sim
        .last_check
        .get(&members[0])
        .cloned()
        .expect("a check from client 0");
    let refused_series = r#"rtcd_limit_refusals_total{limit="remote_address_changes"}"#;
    let victim = |n: u16| std::net::SocketAddr::from(([198, 51, 100, 7], 10_000 + n));

    // 100 spoofed sources within a second: only the burst's remainder gets in.
    let mut taken = 0;
    for n in 0..100 {
        if sim.inject(victim(n), &check).unwrap() {
            taken += 1;
        }
        sim.run_for(Duration::from_millis(10)).unwrap();
    }
    assert!(taken <= 8, "{taken} spoofed addresses taken at once");
    assert!(metric(&sim, refused_series) >= 92, "refusals counted");

    // Then one every 5 s at most.
    let before = metric(&sim, refused_series);
    let mut later = 0;
    for n in 100..200 {
        if sim.inject(victim(n), &check).unwrap() {
            later += 1;
        }
        sim.run_for(Duration::from_millis(100)).unwrap();
    }
    assert!(later <= 3, "{later} new addresses in 10 s");
    assert!(metric(&sim, refused_series) - before >= 97);

    // The other member of the call is unharmed: it still hears and is heard.
    let snap = snapshot(&sim);
    sim.run_for(Duration::from_secs(2)).unwrap();
    let other = members[1];
    let tag0 = sim.clients[members[0]].tag;
    let heard =
        sim.clients[other].received.get(&tag0).copied().unwrap_or(0) - snap[other * 256 + usize::from(tag0)];
    assert!(heard >= 50, "client 1 heard client 0 only {heard} times");
    // The server answered or sent media only to the addresses it admitted.
    assert!(
        sim.stray.len() <= taken + later,
        "the server sent to {} spoofed addresses, admitted {}",
        sim.stray.len(),
        taken + later
    );
}

/// Rescheduling a session leaves its superseded deadline in the timer heap until that time
/// comes; the heap is compacted past twice the sessions, so it stays proportional to them
/// (`rtcd_engine_table_entries{table="timers"}`) however often sessions reschedule.
#[test]
fn the_timer_heap_stays_proportional_to_the_sessions() {
    let mut sim = Sim::new(Faults::default());
    let members = join_all(&mut sim, "call-t", 6, Duration::from_millis(50));
    let mut peak = 0;
    for _ in 0..60 {
        sim.run_for(Duration::from_millis(250)).unwrap();
        let sizes = sim.sfu.table_sizes();
        let get = |k: &str| sizes.iter().find(|(n, _)| *n == k).map(|(_, v)| *v).unwrap();
        let (timers, sessions) = (get("timers"), get("sessions"));
        assert!(
            timers <= 2 * sessions + 17,
            "{timers} timer entries for {sessions} sessions"
        );
        peak = peak.max(timers);
    }
    heard_each_other(&sim, &members, &[], 100);
    eprintln!("timer heap peak: {peak} entries for 6 sessions");
}
