//! The cluster layer across many engines on the harness: members learned through links and
//! gossip, crashes found and confirmed without false accusations, services dropped with their
//! dead member, graceful stops told at once. Seeded; each prints its seed.

use super::*;
use crate::engine::harness::Net;
use crate::rng::XorShift;
use crate::wire::MemberState;

fn seed() -> u64 {
    sim_seed(7_001)
}

fn member_config(node: usize) -> EngineConfig {
    EngineConfig {
        node_id: node as u64 + 1,
        server_timeout: ms(1000),
        cluster: Some(Box::new(ClusterConfig {
            name: format!("n{node}"),
            // Where others dial it: the views and the probes need an address.
            endpoints: vec![format!("sim://{node}")],
            seed: 99,
            ..ClusterConfig::default()
        })),
        ..EngineConfig::default()
    }
}

/// `n` members, each after the first dialling `degree` distinct earlier ones.
fn cluster(seed: u64, n: usize, degree: usize) -> Net {
    let mut rng = XorShift::new(seed);
    let mut net = Net::new(seed, ms(2));
    for node in 0..n {
        net.add(member_config(node));
        for server in rng.distinct_below(node, degree) {
            net.connect(node, server);
        }
    }
    net
}

/// How `viewer` sees member `id`.
fn state_of(net: &Net, viewer: usize, id: u64) -> Option<MemberState> {
    net.engine(viewer)
        .members()
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.state)
}

fn knows_all_alive(net: &Net, viewer: usize, n: usize) -> bool {
    let members = net.engine(viewer).members();
    members.len() == n && members.iter().all(|m| m.state == MemberState::Alive)
}

/// Every member event any node was told, as `viewer: id state`.
fn accusations(net: &Net, n: usize) -> Vec<String> {
    (0..n)
        .flat_map(|viewer| {
            net.events(viewer).iter().filter_map(move |e| match e {
                Event::Member { id, state, .. }
                    if matches!(state, MemberState::Suspect | MemberState::Dead) =>
                {
                    Some(format!("{viewer}: {id} {}", state.name()))
                }
                _ => None,
            })
        })
        .collect()
}

#[test]
fn every_member_learns_every_other_through_sparse_links() {
    let seed = seed();
    let n = 200;
    let mut net = cluster(seed, n, 2);
    assert!(
        net.run_until(Duration::from_secs(20), |net| (0..n)
            .all(|v| knows_all_alive(net, v, n))),
        "seed {seed}: member lists incomplete after 20 s"
    );
    println!("all {n} member lists complete after {:?}", net.elapsed());
    // A quiet cluster sends no membership traffic: only heartbeats flow.
    net.run_for(Duration::from_secs(5));
    let before = net.frames();
    net.run_for(Duration::from_secs(10));
    let per_node_per_s = (net.frames() - before) as f64 / n as f64 / 10.0;
    println!("{per_node_per_s:.1} frames per node per second while quiet");
    assert!(
        accusations(&net, n).is_empty(),
        "{:?}",
        accusations(&net, n)
    );
}

#[test]
fn a_crashed_member_is_found_dead_everywhere_and_its_services_go_with_it() {
    let seed = seed();
    let n = 40;
    let mut net = cluster(seed, n, 3);
    net.publish(5, "tcp://10.0.0.5:1", "orders", None);
    net.publish(6, "tcp://10.0.0.6:1", "billing", None);
    assert!(net.run_until(Duration::from_secs(20), |net| {
        (0..n).all(|v| knows_all_alive(net, v, n) && net.engine(v).store().len() == 2)
    }));
    for v in 0..n {
        net.take_events(v);
    }
    net.kill(5);
    let crashed = 6; // node 5's id
    let survivors: Vec<usize> = (0..n).filter(|&v| v != 5).collect();
    let done = |net: &Net| {
        survivors.iter().all(|&v| {
            state_of(net, v, crashed) == Some(MemberState::Dead) && net.engine(v).store().len() == 1
        })
    };
    assert!(
        net.run_until(Duration::from_secs(30), done),
        "seed {seed}: not every survivor found node 5 dead within 30 s"
    );
    println!("node 5 dead everywhere after {:?}", net.elapsed());
    // Nobody else was accused, and every survivor was told why the service went.
    let wrongly: Vec<String> = accusations(&net, n)
        .into_iter()
        .filter(|a| {
            !a.ends_with(&format!(": {crashed} suspect"))
                && !a.ends_with(&format!(": {crashed} dead"))
        })
        .collect();
    assert!(
        wrongly.is_empty(),
        "seed {seed}: false accusations {wrongly:?}"
    );
    for &v in &survivors {
        assert!(
            net.events(v).iter().any(|e| matches!(
                e,
                Event::Expire { key, reason: ExpireReason::OriginDied } if &**key == "tcp://10.0.0.5:1"
            )),
            "node {v} was not told the service went with its node"
        );
    }
}

#[test]
fn a_graceful_stop_is_left_everywhere_within_a_few_gossip_rounds() {
    let seed = seed();
    let n = 30;
    let mut net = cluster(seed, n, 3);
    assert!(net.run_until(Duration::from_secs(20), |net| {
        (0..n).all(|v| knows_all_alive(net, v, n))
    }));
    let start = net.elapsed();
    net.stop(7);
    assert!(
        net.run_until(Duration::from_secs(5), |net| {
            (0..n)
                .filter(|&v| v != 7)
                .all(|v| state_of(net, v, 8) == Some(MemberState::Left))
        }),
        "seed {seed}: node 7's leave did not reach everyone"
    );
    println!("left everywhere {:?} after the stop", net.elapsed() - start);
    assert!(
        accusations(&net, n).is_empty(),
        "{:?}",
        accusations(&net, n)
    );
}

#[test]
fn five_percent_loss_for_ten_minutes_accuses_no_live_member_of_death() {
    let seed = seed();
    let n = 30;
    let mut net = cluster(seed, n, 3);
    assert!(net.run_until(Duration::from_secs(20), |net| {
        (0..n).all(|v| knows_all_alive(net, v, n))
    }));
    net.set_loss(0.05);
    net.set_jitter(ms(50));
    net.run_for(Duration::from_secs(600));
    let accused = accusations(&net, n);
    let deaths: Vec<&String> = accused.iter().filter(|a| a.ends_with("dead")).collect();
    println!("suspicions and deaths over 10 minutes: {}", accused.len());
    assert!(
        deaths.is_empty(),
        "seed {seed}: live members declared dead: {deaths:?}"
    );
    net.set_loss(0.0);
    assert!(net.run_until(Duration::from_secs(30), |net| {
        (0..n).all(|v| knows_all_alive(net, v, n))
    }));
    // Answers and DISCONNECTs the loss took left peers held one way only (4 in 30 nodes
    // held one for good, before each active peer was asked again every shuffle round): within
    // two rounds every active view is symmetric again.
    let all: Vec<usize> = (0..n).collect();
    let symmetric = net.run_until(Duration::from_secs(120), |net| {
        net.one_sided_views(&all).is_empty()
    });
    assert!(
        symmetric,
        "seed {seed}: active peers held one way only: {:?}",
        net.one_sided_views(&all)
    );
}

/// The members `viewer` lists as alive, by id.
fn alive_at(net: &Net, viewer: usize) -> Vec<u64> {
    let mut ids: Vec<u64> = (net.engine(viewer).members().iter())
        .filter(|m| m.state == MemberState::Alive)
        .map(|m| m.id)
        .collect();
    ids.sort_unstable();
    ids
}

/// The keys `viewer` holds in force.
fn keys_at(net: &Net, viewer: usize) -> Vec<String> {
    let mut keys: Vec<String> = (net.engine(viewer).store().iter())
        .map(|(k, _)| k.to_string())
        .collect();
    keys.sort();
    keys
}

#[test]
fn a_partition_into_halves_heals_into_one_member_list_and_one_store() {
    let seed = seed();
    let n = 30;
    let mut net = cluster(seed, n, 3);
    for node in 0..n {
        net.publish(node, &format!("tcp://10.0.1.{node}:1"), "svc", None);
    }
    assert!(net.run_until(Duration::from_secs(20), |net| {
        (0..n).all(|v| knows_all_alive(net, v, n) && net.engine(v).store().len() == n)
    }));
    // Every link between the halves carries nothing for a minute: each half finds the other
    // dead and drops its services.
    for a in 0..n / 2 {
        for b in n / 2..n {
            net.cut(a, b);
        }
    }
    net.run_for(Duration::from_secs(60));
    let half: Vec<u64> = (0..n / 2).map(|v| v as u64 + 1).collect();
    assert_eq!(alive_at(&net, 0), half, "seed {seed}: the first half alone");
    assert_eq!(net.engine(0).store().len(), n / 2);
    // Healed: the accused refute, republish, and everyone ends with one list and one store.
    for v in 0..n {
        net.take_events(v);
    }
    net.heal_all();
    let all: Vec<u64> = (1..=n as u64).collect();
    // Measured over 40 seeds: 0.87 s to 1.22 s. It took 20 s to 110 s on some seeds while a
    // member dropped from an active view for an accusation the heal brought in was not told:
    // it kept that node as an active peer that passed it no gossip, and missed refutations.
    let healed = net.run_until(Duration::from_secs(10), |net| {
        (0..n).all(|v| alive_at(net, v) == all && net.engine(v).store().len() == n)
    });
    let behind: Vec<String> = (0..n)
        .filter(|&v| alive_at(&net, v) != all || net.engine(v).store().len() != n)
        .map(|v| {
            let missing: Vec<u64> = all
                .iter()
                .copied()
                .filter(|id| !alive_at(&net, v).contains(id))
                .collect();
            format!(
                "node {v} misses {missing:?}, holds {}",
                net.engine(v).store().len()
            )
        })
        .collect();
    assert!(healed, "seed {seed}: not healed: {behind:?}");
    let first = keys_at(&net, 0);
    assert!((0..n).all(|v| keys_at(&net, v) == first));
    // The old accusations the heal brought in were refuted before anyone acted on them: no
    // live service was dropped (one per member the node wrongly held dead, before).
    let dropped: Vec<String> = (0..n)
        .flat_map(|v| {
            (net.events(v).iter()).filter_map(move |e| match e {
                Event::Expire { key, .. } => Some(format!("node {v}: {key}")),
                _ => None,
            })
        })
        .collect();
    assert!(
        dropped.is_empty(),
        "seed {seed}: the heal dropped {dropped:?}"
    );
    println!(
        "healed {:?} after the cut ended",
        net.elapsed() - Duration::from_secs(60)
    );
}

/// Half the cluster crashes at once, without goodbye. Every dead member was an active peer of
/// some survivor, so the links that lost it find it: within a few seconds every survivor
/// lists exactly the survivors as alive. A link closed because it was lost must keep its
/// member watched; closed as if on purpose, one dead member in ten waited for the probe round,
/// which took seconds more.
#[test]
fn half_the_cluster_crashing_at_once_is_found_through_the_links_that_lost_it() {
    crash_at_once(0.5, Duration::from_secs(4));
}

/// Four in five crash at once: members none of whose neighbours survived are found by the
/// views' dials and a probe round that speeds up while it finds the dead, and a survivor cut
/// off for a while hears the deaths it missed once it has a neighbour again, whichever side
/// asked: about 5 s. Before that, on seeds 3 and 4 a survivor cut off for 4 s held the dead
/// alive for 12 s, until the next push-pull.
#[test]
fn four_in_five_crashing_at_once_are_found_by_every_survivor_within_seconds() {
    crash_at_once(0.8, Duration::from_secs(7));
}

/// 200 members join through the first; it and `fraction` of the rest crash at once. Every
/// survivor must list exactly the survivors as alive within `limit` (at best: a second for
/// the lost link, one for the direct probe, half a second for the indirect one, then gossip).
fn crash_at_once(fraction: f64, limit: Duration) {
    let seed = seed();
    let n = 200;
    // Each joins through the first alone, as the bench does: the views are all the links.
    let mut net = Net::new(seed, ms(2));
    net.skip_events();
    net.add(member_config(0));
    for node in 1..n {
        net.add(member_config(node));
        net.connect(node, 0);
        net.run_for(ms(20));
    }
    assert!(
        net.run_until(Duration::from_secs(30), |net| (0..n)
            .all(|v| knows_all_alive(net, v, n))),
        "seed {seed}: member lists incomplete after 30 s"
    );
    // Settled views: the links that carry them are the ones that lose the dead.
    net.run_for(Duration::from_secs(10));
    let mut rng = XorShift::new(seed ^ 0xdead);
    let count = ((n - 1) as f64 * fraction) as usize;
    // The first, which everyone dialled, among them.
    let mut dead: Vec<usize> = (rng.distinct_below(n - 1, count).into_iter())
        .map(|v| v + 1)
        .collect();
    dead.push(0);
    for &v in &dead {
        net.kill(v);
    }
    let survivors: Vec<usize> = (0..n).filter(|v| !dead.contains(v)).collect();
    let alive: Vec<u64> = survivors.iter().map(|&v| v as u64 + 1).collect();
    let start = net.elapsed();
    let exact = net.run_until(limit, |net| {
        survivors.iter().all(|&v| net.alive_ids(v) == alive)
    });
    let lagging = (survivors.iter())
        .filter(|&&v| net.alive_ids(v) != alive)
        .count();
    assert!(
        exact,
        "seed {seed}: {lagging} of {} survivors still list a dead member as alive {limit:?} after the crash",
        survivors.len()
    );
    println!(
        "{} of {n} crashed: every survivor lists exactly the survivors {:?} after",
        dead.len(),
        net.elapsed() - start
    );
}
