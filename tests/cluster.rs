//! The cluster layer through the typed API and the pipe: members learned across nodes, the
//! endpoints they advertise, a node killed found dead and its services dropped, a stop seen
//! as left, and CZMQ-style peers (nodes with the cluster off) never members.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use support::{node, spawn, wait_holds, wait_until};
use zgossip::{Config, Member, MemberState, Membership, Node};

async fn members(node: &Node) -> Vec<Member> {
    node.members().await.unwrap()
}

/// Waits until `node` lists exactly `names`, all in `state`.
async fn wait_members(node: &Node, names: &[&str], state: MemberState) {
    let mut want: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    want.sort();
    wait_until("member list", async || {
        let list = members(node).await;
        let mut got: Vec<String> = list.iter().map(|m| m.name.clone()).collect();
        got.sort();
        if got == want
            && list
                .iter()
                .all(|m| m.state == state || m.name == list[0].name)
        {
            Ok(())
        } else {
            Err(list
                .iter()
                .map(|m| format!("{} {}", m.name, m.state.name()))
                .collect::<Vec<_>>())
        }
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn members_spread_through_a_chain_and_advertise_what_they_bind() {
    let a = node("a");
    let b = node("b");
    let c = node("c");
    a.bind("inproc://cluster-a").await.unwrap();
    b.bind("inproc://cluster-b").await.unwrap();
    b.connect("inproc://cluster-a").await.unwrap();
    c.connect("inproc://cluster-b").await.unwrap();
    for n in [&a, &b, &c] {
        wait_members(n, &["a", "b", "c"], MemberState::Alive).await;
    }
    // Each lists itself first; a advertises what it bound, c (bound to nothing) nothing.
    let seen_by_c = members(&c).await;
    assert_eq!(seen_by_c[0].name, "c");
    let a_at_c = seen_by_c.iter().find(|m| m.name == "a").unwrap();
    assert_eq!(a_at_c.endpoints, ["inproc://cluster-a"]);
    assert!(seen_by_c[0].endpoints.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_bind_is_not_advertised_and_advertise_replaces_what_is() {
    let a = node("wild");
    a.bind("tcp://*:*").await.unwrap();
    a.bind("tcp://127.0.0.1:*").await.unwrap();
    let me = &members(&a).await[0];
    assert_eq!(me.endpoints.len(), 1, "{:?}", me.endpoints);
    assert!(me.endpoints[0].starts_with("tcp://127.0.0.1:"));
    let incarnation = me.incarnation;
    a.set("node/advertise", "tcp://10.0.0.5:5670")
        .await
        .unwrap();
    let me = &members(&a).await[0];
    assert_eq!(me.endpoints, ["tcp://10.0.0.5:5670"]);
    assert!(
        me.incarnation > incarnation,
        "a change of record raises the incarnation"
    );
    assert!(a.set("node/advertise", "tcp://*:5670").await.is_err());
    // Tags change the same way, comma-separated; words with spaces or no key are refused.
    a.set("node/tags", "zone=eu2,role=api").await.unwrap();
    let me = &members(&a).await[0];
    assert_eq!(me.tags, ["zone=eu2", "role=api"]);
    assert!(a.set("node/tags", "=eu2").await.is_err());
    a.set("node/tags", "-").await.unwrap();
    assert!(members(&a).await[0].tags.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_killed_member_is_found_dead_and_its_services_go_a_stopped_one_left() {
    let hub = node("hub");
    hub.bind("inproc://cluster-hub").await.unwrap();
    let spokes: Vec<Node> = (0..3).map(|n| node(&format!("spoke-{n}"))).collect();
    for spoke in &spokes {
        spoke
            .bind(&format!(
                "inproc://cluster-{}",
                spoke.members().await.unwrap()[0].name
            ))
            .await
            .unwrap();
        spoke.connect("inproc://cluster-hub").await.unwrap();
    }
    spokes[0]
        .publish("tcp://10.0.0.1:1", "orders")
        .await
        .unwrap();
    wait_holds(&spokes[2], "tcp://10.0.0.1:1", "orders").await;
    wait_members(
        &spokes[2],
        &["hub", "spoke-0", "spoke-1", "spoke-2"],
        MemberState::Alive,
    )
    .await;

    // A crash: no goodbye, no withdrawal. Found dead, and its service goes with it.
    spokes[0].kill().await.unwrap();
    wait_until("spoke-0 dead at spoke-2, its tuple gone", async || {
        let list = members(&spokes[2]).await;
        let state = list.iter().find(|m| m.name == "spoke-0").map(|m| m.state);
        let held = spokes[2].get("tcp://10.0.0.1:1").await.unwrap();
        if state == Some(MemberState::Dead) && held.is_none() {
            Ok(())
        } else {
            Err((state, held))
        }
    })
    .await;
    // A graceful stop is left.
    spokes[1].shutdown().await.unwrap();
    wait_until("spoke-1 left at spoke-2", async || {
        let list = members(&spokes[2]).await;
        match list.iter().find(|m| m.name == "spoke-1").map(|m| m.state) {
            Some(MemberState::Left) => Ok(()),
            other => Err(other),
        }
    })
    .await;
    // No live member was ever accused.
    let list = members(&hub).await;
    for m in &list {
        if m.name == "hub" || m.name == "spoke-2" {
            assert_eq!(m.state, MemberState::Alive, "{m:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_node_with_the_cluster_off_is_nobody_s_member_and_knows_none() {
    let a = node("member");
    a.bind("inproc://cluster-off").await.unwrap();
    let mut config = Config::named("plain");
    config.cluster = Membership::Off;
    let plain = spawn(config);
    plain.connect("inproc://cluster-off").await.unwrap();
    plain.publish("k", "v").await.unwrap();
    wait_holds(&a, "k", "v").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(members(&plain).await.is_empty());
    let names: Vec<String> = members(&a).await.iter().map(|m| m.name.clone()).collect();
    assert_eq!(names, ["member"]);
}
