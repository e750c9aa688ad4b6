//! One conformance body per behaviour, run once per placement. A transport
//! joins the suite by adding its placement to the `placements!` list at the
//! bottom; the bodies do not change.

mod support;

use std::future::IntoFuture;
use std::time::Duration;

use botbus::Blob;
use botbus::{AskError, CallEvent, DownReason, ModuleStatus, SendError};
use support::{Event, Note, Placement, Question, Req, Stereo, World, DEADLINE};

async fn tell(placement: Placement) {
    let mut world = World::new(placement).await;
    world.client.tell("recorder", Note(7)).await.unwrap();
    assert_eq!(world.next_event().await, Event::Got { topic: None, note: 7 });
    world.finish().await;
}

/// More tells than the recorder's mailbox holds, sent as fast as they are
/// taken: over a link, the reader hands them on together, then parks the
/// rest behind the full mailbox. Each arrives, once, in the order sent, and
/// so do the recorder's reports of them to the probe.
async fn a_burst_of_tells_arrives_whole_and_in_order(placement: Placement) {
    let mut world = World::new(placement).await;
    const BURST: u32 = 300;
    for note in 0..BURST {
        world.client.tell("recorder", Note(note)).await.unwrap();
    }
    for note in 0..BURST {
        assert_eq!(world.next_event().await, Event::Got { topic: None, note });
    }
    world.finish().await;
}

async fn ask(placement: Placement) {
    let world = World::new(placement).await;
    let sum: u32 = world.client.ask("echo", Req::Add(2, 3)).await.unwrap();
    assert_eq!(sum, 5);
    // A qualified address reaches the same module.
    let qualified = format!("{}/echo", world.b.name());
    let sum: u32 = world.client.ask(&qualified, Req::Add(4, 4)).await.unwrap();
    assert_eq!(sum, 8);
    // An error returned by `process` is the asker's typed error.
    let failed = world.client.ask::<_, u32>("echo", Req::Fail).await.unwrap_err();
    assert!(
        matches!(&failed, AskError::Remote { module, message } if module == "echo" && message.contains("asked to fail")),
        "{failed:?}"
    );
    // The wrong reply type is a typed error, not garbage.
    let wrong = world.client.ask::<_, String>("echo", Req::Add(1, 1)).await.unwrap_err();
    assert!(matches!(wrong, AskError::BadPayload(_)), "{wrong:?}");
    world.finish().await;
}

async fn ask_timeout(placement: Placement) {
    let mut world = World::new(placement).await;
    let outcome = world
        .client
        .ask::<_, u32>("echo", Req::Sleep)
        .timeout(Duration::from_millis(150))
        .await;
    assert!(
        matches!(outcome, Err(AskError::Timeout { ref module, after })
            if module == "echo" && after == Duration::from_millis(150)),
        "{outcome:?}"
    );
    // The callee hears that its asker gave up.
    assert_eq!(world.next_event().await, Event::Cancelled("echo".into()));
    world.finish().await;
}

/// Each ask ends at its own deadline, whoever keeps it: an ask with a
/// short deadline, sent while one with a long deadline waits, times out
/// long before that one would (across a link, the link's one timer is
/// moved earlier for it); the long one still waits, and its callee hears
/// when it is given up.
async fn each_ask_ends_at_its_own_deadline(placement: Placement) {
    let mut world = World::new(placement).await;
    let mut patient = Box::pin(
        world
            .client
            .ask::<_, u32>("echo", Req::Sleep)
            .timeout(DEADLINE * 6)
            .into_future(),
    );
    assert!(futures::poll!(&mut patient).is_pending(), "sent, and waiting");
    let hasty = world
        .client
        .ask::<_, u32>("echo", Req::Sleep)
        .timeout(Duration::from_millis(150));
    let outcome = tokio::time::timeout(DEADLINE, hasty)
        .await
        .expect("the short deadline ends its ask, not the long one's");
    assert!(
        matches!(outcome, Err(AskError::Timeout { ref module, after })
            if module == "echo" && after == Duration::from_millis(150)),
        "{outcome:?}"
    );
    assert!(
        futures::poll!(&mut patient).is_pending(),
        "the long deadline has not passed"
    );
    // Given up, the patient ask is cancelled where `echo` works on it.
    drop(patient);
    assert_eq!(world.next_event().await, Event::Cancelled("echo".into()));
    world.finish().await;
}

/// The callee sees the deadline its asker waits until, wherever it runs:
/// the ask's timeout from its sending, less at most the time the ask took
/// to get there and the millisecond each link rounds it down by.
async fn callee_sees_the_askers_deadline(placement: Placement) {
    let world = World::new(placement).await;
    let timeout = Duration::from_secs(20);
    let sent = std::time::Instant::now();
    let left_ms: u32 = world.client.ask("echo", Req::TimeLeft).timeout(timeout).await.unwrap();
    let round_trip = sent.elapsed();
    let left = Duration::from_millis(left_ms.into());
    assert!(left <= timeout, "{left:?} left of {timeout:?}");
    assert!(
        left + round_trip + Duration::from_millis(3) >= timeout,
        "{left:?} left of {timeout:?}, {round_trip:?} after the sending"
    );
    world.finish().await;
}

async fn ask_unknown_module(placement: Placement) {
    let world = World::new(placement).await;
    let outcome = world.client.ask::<_, u32>("nobody", Req::Add(1, 1)).await;
    assert_eq!(outcome, Err(AskError::UnknownModule("nobody".into())));
    let told = world.client.tell("nobody", Note(1)).await;
    assert_eq!(told, Err(SendError::UnknownModule("nobody".into())));
    world.finish().await;
}

async fn topics_with_wildcards(placement: Placement) {
    let mut world = World::new(placement).await;
    let c = &world.client;
    // `sensors/*/temp`: exactly one level.
    assert!(c.publish("sensors/left/temp", Note(1)).await.unwrap() >= 1);
    c.publish("sensors/left/deep/temp", Note(99)).await.unwrap();
    // `arm/**`: any depth, zero included.
    c.publish("arm", Note(2)).await.unwrap();
    c.publish("arm/joint/3/angle", Note(3)).await.unwrap();
    // Nobody subscribes to this one: reaches no one, and is no error.
    assert_eq!(c.publish("odometry", Note(98)).await.unwrap(), 0);
    for (topic, note) in [("sensors/left/temp", 1), ("arm", 2), ("arm/joint/3/angle", 3)] {
        let expected = Event::Got {
            topic: Some(topic.into()),
            note,
        };
        assert_eq!(world.next_event().await, expected);
    }
    // Nothing else arrived: the next event is a fresh tell, not note 99 or 98.
    world.client.tell("recorder", Note(4)).await.unwrap();
    assert_eq!(world.next_event().await, Event::Got { topic: None, note: 4 });
    assert!(c_publish_rejects_wildcards(&world).await);
    world.finish().await;
}

async fn c_publish_rejects_wildcards(world: &World) -> bool {
    matches!(
        world.client.publish("sensors/*/temp", Note(0)).await,
        Err(SendError::InvalidName(_))
    )
}

async fn large_blobs(placement: Placement) {
    let mut world = World::new(placement).await;
    // Large blobs (written from where they lie, read as slices of what the
    // link read) between other fields, and a small one (copied both ways).
    let image = |len: usize, seed: u32| -> Blob {
        Blob::from(
            (0..len as u32)
                .map(|i| (i.wrapping_mul(seed) >> 3) as u8)
                .collect::<Vec<u8>>(),
        )
    };
    let (mut taken, mut byte_sum) = (0, 0);
    for seq in 0..3 {
        let sent = Stereo {
            seq,
            left: image(64 * 1024, 7 + seq),
            right: image(200 * 1024 + 3, 13 + seq),
            thumbnail: image(100, 5),
            caption: format!("frame {seq}"),
        };
        let back: Stereo = world
            .client
            .ask("mirror", sent.clone())
            .timeout(DEADLINE)
            .await
            .unwrap();
        assert_eq!(back, sent, "every byte of frame {seq} came back");
        (taken, byte_sum) = (taken + 1, byte_sum + sent.byte_sum());
    }
    // A burst of tells: the blobs' frames keep their order with the small
    // frames around them, and arrive whole.
    for seq in 0..20 {
        let stereo = Stereo {
            seq,
            left: image(32 * 1024, seq),
            right: image(17 * 1024, seq + 1),
            thumbnail: Blob::default(),
            caption: String::new(),
        };
        (taken, byte_sum) = (taken + 1, byte_sum + stereo.byte_sum());
        world.client.tell("mirror", stereo).await.unwrap();
        world.client.tell("recorder", Note(seq)).await.unwrap();
    }
    for seq in 0..20 {
        assert_eq!(world.next_event().await, Event::Got { topic: None, note: seq });
    }
    let tally = Stereo {
        seq: 0,
        left: Blob::default(),
        right: Blob::default(),
        thumbnail: Blob::default(),
        caption: "tally".into(),
    };
    let tally: Stereo = world.client.ask("mirror", tally).timeout(DEADLINE).await.unwrap();
    assert_eq!(
        (tally.seq, tally.caption),
        (taken, byte_sum.to_string()),
        "every blob told arrived whole"
    );
    world.finish().await;
}

async fn progress(placement: Placement) {
    let world = World::new(placement).await;
    let mut call = world.client.ask::<_, u32>("echo", Req::Count(3)).start().await.unwrap();
    let mut seen = Vec::new();
    while let Some(event) = call.next_event().await {
        match event {
            CallEvent::Progress(p) => seen.push(p.decode::<u32>().unwrap()),
            CallEvent::Message(m) => panic!("unexpected caller message {m:?}"),
        }
    }
    assert_eq!(seen, vec![1, 2, 3]);
    assert_eq!(call.reply().await, Ok(3));
    world.finish().await;
}

async fn cancel(placement: Placement) {
    let mut world = World::new(placement).await;
    // The callee is working on it, then the asker cancels.
    let call = world.sleeping_call().await;
    call.cancel();
    assert_eq!(world.next_event().await, Event::Cancelled("echo".into()));
    // The module is free again.
    let sum: u32 = world.client.ask("echo", Req::Add(1, 2)).await.unwrap();
    assert_eq!(sum, 3);
    world.finish().await;
}

async fn caller_message(placement: Placement) {
    let world = World::new(placement).await;
    for answer in [true, false] {
        let mut call = world.client.ask::<_, u32>("echo", Req::Confirm).start().await.unwrap();
        while let Some(event) = call.next_event().await {
            if let CallEvent::Message(request) = event {
                assert_eq!(request.decode::<Question>().unwrap().0, "proceed?");
                request.reply(answer);
            }
        }
        assert_eq!(call.reply().await, Ok(u32::from(answer)));
    }
    // An asker that does not listen refuses caller messages: the callee's
    // `ask_caller` fails, and that failure is its reply.
    let refused = world.client.ask::<_, u32>("echo", Req::Confirm).await.unwrap_err();
    assert!(matches!(refused, AskError::Remote { .. }), "{refused:?}");
    world.finish().await;
}

async fn panic_restarts(placement: Placement) {
    let mut world = World::new(placement).await;
    world.client.tell("crashy", Req::Panic).await.unwrap();
    assert_eq!(world.next_event().await, Event::Started("crashy".into()));
    // The new instance answers (its count starts from zero).
    let tally: u32 = world.client.ask("crashy", Req::Tally).await.unwrap();
    assert_eq!(tally, 0);
    // An ask in flight when the module panics ends with an error at once.
    let outcome = world.client.ask::<_, u32>("crashy", Req::Panic).await;
    assert_eq!(outcome, Err(AskError::Stopped("crashy".into())));
    assert_eq!(world.next_event().await, Event::Started("crashy".into()));
    // `Started` is reported from inside the hook; running is the state after it.
    world
        .b
        .wait_until("crashy running again", DEADLINE, |node| {
            node.status("crashy") == Some(ModuleStatus::Running)
        })
        .await
        .unwrap();
    world.finish().await;
}

async fn budget_exhausted_fails_and_tells_monitor(placement: Placement) {
    let mut world = World::new(placement).await;
    let _: u32 = world.client.ask("watcher", Req::Watch("fragile".into())).await.unwrap();
    world.client.tell("fragile", Req::Panic).await.unwrap();
    assert_eq!(world.next_event().await, Event::Started("fragile".into()));
    world.client.tell("fragile", Req::Panic).await.unwrap();
    match world.next_event().await {
        Event::Down(module, DownReason::Failed(why)) => {
            assert_eq!(module, "fragile");
            assert!(why.contains("restart budget"), "{why}");
        }
        other => panic!("expected the monitor to hear of the failure, got {other:?}"),
    }
    assert!(matches!(world.b.status("fragile"), Some(ModuleStatus::Failed(_))));
    // Gone for good: asks now end at once.
    let b = world.b.clone();
    world
        .a
        .wait_until("fragile unroutable", DEADLINE, |_| {
            !b.modules().contains(&"fragile".to_owned())
        })
        .await
        .unwrap();
    let outcome = world.client.ask::<_, u32>("fragile", Req::Add(1, 1)).await;
    assert!(
        matches!(outcome, Err(AskError::UnknownModule(_) | AskError::Stopped(_))),
        "{outcome:?}"
    );
    world.finish().await;
}

async fn pending_ask_ends_when_callee_stops(placement: Placement) {
    let world = World::new(placement).await;
    let call = world.sleeping_call().await;
    world.b.stop_module("echo").await.unwrap();
    assert!(matches!(
        world.b.stop_module("echo").await,
        Err(botbus::NodeError::NoSuchModule(_))
    ));
    let outcome = tokio::time::timeout(DEADLINE, call.reply())
        .await
        .expect("the ask ends, not hangs");
    assert_eq!(outcome, Err(AskError::Stopped("echo".into())));
    world.finish().await;
}

async fn full_mailbox_backpressure(placement: Placement) {
    let world = World::new(placement).await;
    // `slow` has a one-message mailbox and holds its first message.
    world.client.tell("slow", Req::Hold).await.unwrap();
    let mut accepted = 0u32;
    let refused = loop {
        match world.client.try_tell("slow", Req::Add(0, 0)) {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
        assert!(accepted < 1_000_000, "the queue to a stuck module must be bounded");
    };
    assert_eq!(refused, SendError::MailboxFull("slow".into()));
    // A waiting tell completes once there is room again...
    let waiting = {
        let client = world.a.client("waiter");
        tokio::spawn(async move { client.tell("slow", Req::Add(0, 0)).await })
    };
    world.release(1);
    tokio::time::timeout(DEADLINE, waiting).await.unwrap().unwrap().unwrap();
    // ...and nothing accepted was dropped: Hold + accepted + the waiting one.
    let tally: u32 = world.client.ask("slow", Req::Tally).timeout(DEADLINE).await.unwrap();
    assert_eq!(tally, 1 + accepted + 1);
    world.finish().await;
}

macro_rules! placements {
    ($($placement:ident => $module:ident),* $(,)?) => {$(
        mod $module {
            use super::*;
            scenarios!($placement:
                tell, a_burst_of_tells_arrives_whole_and_in_order, ask, ask_timeout, each_ask_ends_at_its_own_deadline, callee_sees_the_askers_deadline, ask_unknown_module, topics_with_wildcards, large_blobs, progress, cancel,
                caller_message, panic_restarts, budget_exhausted_fails_and_tells_monitor,
                pending_ask_ends_when_callee_stops, full_mailbox_backpressure,
            );
        }
    )*};
}

macro_rules! scenarios {
    ($placement:ident: $($scenario:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $scenario() {
            tokio::time::timeout(DEADLINE * 3, super::$scenario(Placement::$placement))
                .await
                .expect("scenario finishes in bounded time");
        }
    )*};
}

placements!(
    OneNode => one_node,
    TwoNodesMem => two_nodes_mem,
    TwoNodesJson => two_nodes_json,
    TwoNodesPipe => two_nodes_pipe,
    TwoNodesPipeOneThread => two_nodes_pipe_one_thread,
    TwoNodesTcp => two_nodes_tcp,
    TwoNodesTls => two_nodes_tls,
    JoinedThroughHub => joined_through_hub,
    OnWorkerThroughHub => on_worker_through_hub,
    Child => child,
    SiblingChildren => sibling_children,
    ChildrenOneThread => children_one_thread,
    ThreeNodeChain => three_node_chain,
);
