//! Many engines on the harness ([`crate::engine::harness::Net`]): virtual time, no tokio.

use super::*;
use crate::engine::harness::Net;
use crate::rng::XorShift;

fn seed() -> u64 {
    sim_seed(20261201)
}

fn config(node: usize) -> EngineConfig {
    EngineConfig {
        node_id: node as u64 + 1,
        server_timeout: ms(1000),
        ..EngineConfig::default()
    }
}

/// `n` nodes, each after the first dialling `degree` distinct earlier ones.
fn mesh(net: &mut Net, rng: &mut XorShift, n: usize, degree: usize) {
    for node in 0..n {
        net.add(config(node));
        for server in rng.distinct_below(node, degree) {
            net.connect(node, server);
        }
    }
}

fn holds(net: &Net, node: usize, key: &str) -> bool {
    net.engine(node)
        .store()
        .entry(key)
        .is_some_and(|e| e.kind == Kind::Live)
}

#[test]
fn a_tuple_travels_a_chain_and_its_withdrawal_follows() {
    let mut net = Net::new(1, ms(5));
    for node in 0..4 {
        net.add(config(node));
        if node > 0 {
            net.connect(node, node - 1);
        }
    }
    net.run_for(ms(100));
    net.publish(3, "tcp://10.0.0.3:1", "orders", None);
    assert!(net.run_until(ms(1000), |net| holds(net, 0, "tcp://10.0.0.3:1")));
    // Three hops of 5 ms each.
    let told = net.take_events(0);
    assert!(
        told.iter()
            .any(|e| matches!(e, Event::Deliver { key, .. } if &**key == "tcp://10.0.0.3:1")),
        "{told:?}"
    );
    net.unpublish(3, "tcp://10.0.0.3:1");
    assert!(net.run_until(ms(1000), |net| (0..4).all(|n| !holds(
        net,
        n,
        "tcp://10.0.0.3:1"
    ))));
    assert!(
        net.events(0)
            .iter()
            .any(|e| matches!(e, Event::Remove { key, .. } if &**key == "tcp://10.0.0.3:1"))
    );
}

#[test]
fn a_restarted_server_gets_every_tuple_back_from_its_clients() {
    let mut net = Net::new(2, ms(2));
    net.add(config(0));
    net.add(config(1));
    net.connect(1, 0);
    net.publish(1, "tcp://10.0.0.1:1", "billing", Some(ms(3000)));
    assert!(net.run_until(ms(500), |net| holds(net, 0, "tcp://10.0.0.1:1")));
    net.kill(0);
    net.run_for(ms(300));
    net.restart(0);
    // Redialled within REDIAL, and republished on connect.
    assert!(net.run_until(ms(500), |net| holds(net, 0, "tcp://10.0.0.1:1")));
}

/// A seeded scenario with loss, jitter, a crash, a restart and a partition; returns the digest
/// of every output and whether every live node ended with every tuple.
fn scenario(seed: u64) -> (u64, bool) {
    let mut rng = XorShift::new(seed);
    let mut net = Net::new(seed, ms(3));
    net.set_jitter(ms(4));
    net.set_loss(0.02);
    mesh(&mut net, &mut rng, 40, 2);
    net.run_for(ms(200));
    for node in (0..40).step_by(4) {
        net.publish(node, &format!("tcp://10.0.0.{node}:1"), "svc", None);
    }
    net.run_for(ms(1500));
    net.kill(5);
    net.cut(0, 1);
    net.run_for(ms(1500));
    net.restart(5);
    net.publish(5, "tcp://10.0.0.5:1", "late", None);
    net.heal_all();
    net.set_loss(0.0);
    let keys: Vec<String> = (0..40)
        .step_by(4)
        .map(|n| format!("tcp://10.0.0.{n}:1"))
        .chain(["tcp://10.0.0.5:1".to_owned()])
        .collect();
    let converged = net.run_until(Duration::from_secs(30), |net| {
        (0..net.len()).all(|n| keys.iter().all(|k| holds(net, n, k)))
    });
    (net.trace_digest(), converged)
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    let seed = seed();
    let (first, converged) = scenario(seed);
    assert!(converged, "seed {seed}: the network did not converge");
    let (again, _) = scenario(seed);
    assert_eq!(first, again, "seed {seed}: a rerun took another path");
    let (other, _) = scenario(seed ^ 0x5555);
    assert_ne!(first, other, "another seed should lose other frames");
}

#[test]
fn two_thousand_engines_in_a_sparse_mesh_all_learn_every_service() {
    let seed = seed();
    let mut rng = XorShift::new(seed);
    let mut net = Net::new(seed, ms(1));
    mesh(&mut net, &mut rng, 2000, 2);
    let services: Vec<usize> = rng.distinct_below(2000, 20);
    for &node in &services {
        net.publish(
            node,
            &format!("tcp://10.1.{}.{}:1", node / 256, node % 256),
            "svc",
            None,
        );
    }
    let all = |net: &Net| (0..net.len()).all(|n| net.engine(n).store().len() == services.len());
    assert!(
        net.run_until(Duration::from_secs(10), all),
        "seed {seed}: not converged after 10 s of virtual time"
    );
    println!(
        "converged in {:?} of virtual time, {} frames",
        net.elapsed(),
        net.frames()
    );
}
