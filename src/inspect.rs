//! The introspection commands: `botbus nodes`, `modules`, `topics`,
//! `call`, `echo`, `hz` and `pub`, against a running robot. Each joins the robot at an endpoint as a
//! node of its own (`botbus-cli-<pid>`), asks every node it can reach to
//! describe itself (`node/botbus.node`), and prints what it heard — for a
//! person by default, one JSON object per line with `--json`.

use std::time::Duration;

use botbus::crates::core::{CallEvent, CodecKind, Payload};
use botbus::{AskError, Introspect, Node, NodeBuilder, NodeInfo, NODE_MODULE};
use serde::Serialize;

/// How long a command waits for the robot to answer.
const WAIT: Duration = Duration::from_secs(5);

/// A command's failure: one line, and a non-zero exit.
pub(crate) type Failure = Box<dyn std::error::Error>;

/// This tool's node, linked to the robot at `endpoint`, once the robot has
/// said what lives behind it.
pub(crate) fn join(endpoint: &str, builder: NodeBuilder) -> Result<Node, Failure> {
    let node = builder.start()?;
    let (linked, at) = (node.clone(), endpoint.to_owned());
    node.block_on(async move { linked.connect(&at).await })?
        .map_err(|error| format!("no robot at `{endpoint}`: {error}"))?;
    let waiter = node.clone();
    node.block_on(async move {
        // What lives behind the link arrives in the peer's first
        // announcement; a node behind it, in one that follows.
        waiter
            .wait_until("the robot's announcement", WAIT, |node| {
                !node.reachable_nodes().is_empty()
                    && node
                        .reachable_nodes()
                        .iter()
                        .all(|n| node.reaches(&format!("{n}/{NODE_MODULE}")) || !node.peers().contains(n))
            })
            .await
    })??;
    Ok(node)
}

/// Every node's description, in node order; nodes that do not describe
/// themselves (a simple peer) are left out.
pub(crate) fn describe_all(node: &Node) -> Result<Vec<NodeInfo>, Failure> {
    let asker = node.clone();
    let infos = node.block_on(async move {
        let client = asker.client("cli");
        let mut infos = Vec::new();
        tracing::debug!(nodes = ?asker.reachable_nodes(), "asking every node to describe itself");
        for other in asker.reachable_nodes() {
            let to = format!("{other}/{NODE_MODULE}");
            if !asker.reaches(&to) {
                tracing::debug!(node = %other, "does not describe itself");
                continue;
            }
            match client.ask::<_, NodeInfo>(&to, Introspect::Node).timeout(WAIT).await {
                Ok(info) => infos.push(info),
                Err(error) => tracing::warn!(node = %other, %error, "did not describe itself"),
            }
        }
        infos
    })?;
    Ok(infos)
}

/// Prints `rows` as JSON lines, or as a table with `header`.
fn print_rows<R: Serialize>(rows: &[R], json: bool, header: &[&str], cells: impl Fn(&R) -> Vec<String>) {
    if json {
        for row in rows {
            println!("{}", serde_json::to_string(row).expect("rows are JSON"));
        }
        return;
    }
    let table: Vec<Vec<String>> = rows.iter().map(&cells).collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            table
                .iter()
                .map(|row| row[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in &table {
        line(row.iter().map(String::as_str).collect());
    }
}

/// `botbus nodes`.
pub(crate) fn nodes(infos: &[NodeInfo], json: bool) {
    #[derive(Serialize)]
    struct Row<'a> {
        node: &'a str,
        pid: u32,
        modules: usize,
        peers: &'a [String],
        links: &'a [botbus::LinkInfo],
    }
    let rows: Vec<Row<'_>> = infos
        .iter()
        .map(|i| Row {
            node: &i.node,
            pid: i.pid,
            modules: i.modules.len(),
            peers: &i.peers,
            links: &i.links,
        })
        .collect();
    print_rows(&rows, json, &["NODE", "PID", "MODULES", "LINKS"], |r| {
        let links: Vec<String> = r
            .links
            .iter()
            .map(|l| format!("{} ({} {})", l.peer, l.kind, l.via))
            .collect();
        vec![
            r.node.to_owned(),
            r.pid.to_string(),
            r.modules.to_string(),
            links.join(", "),
        ]
    });
}

/// Where a module runs, as seen from the robot the tool joined: a module
/// a worker started for another node is `worker:<node>`; a module in a
/// process that joined another node (a link it made, as a module started
/// separately joins a hub) is `joined:<endpoint>`; otherwise the node's own
/// word (`thread`, `child`, `worker:<name>` on the node that placed it).
fn placement(info: &NodeInfo, module: &botbus::ModuleInfo, joined_at: &str) -> String {
    if module.placement != "thread" || info.node == joined_at {
        return module.placement.clone();
    }
    if let Some(by) = &module.placed_by {
        return format!("worker:{} for {by}", info.node);
    }
    match info.links.iter().find(|l| l.kind == "connected") {
        Some(link) => format!("joined:{}", link.via),
        None => module.placement.clone(),
    }
}

/// `botbus modules`; `joined_at` is the node the tool joined.
pub(crate) fn modules(infos: &[NodeInfo], joined_at: &str, json: bool) {
    #[derive(Serialize)]
    struct Row<'a> {
        node: &'a str,
        #[serde(flatten)]
        module: botbus::ModuleInfo,
    }
    let rows: Vec<Row<'_>> = infos
        .iter()
        .flat_map(|i| {
            i.modules.iter().map(move |m| {
                // A module placed on a worker: its process and types are
                // what the worker's node says of it.
                let on_worker = m
                    .placement
                    .strip_prefix("worker:")
                    .and_then(|worker| infos.iter().find(|w| w.node == worker))
                    .and_then(|worker| worker.modules.iter().find(|w| w.name == m.name));
                Row {
                    node: &i.node,
                    module: botbus::ModuleInfo {
                        placement: placement(i, m, joined_at),
                        pid: m.pid.or(on_worker.and_then(|w| w.pid)),
                        takes: m.takes.clone().or(on_worker.and_then(|w| w.takes.clone())),
                        answers: m.answers.clone().or(on_worker.and_then(|w| w.answers.clone())),
                        ..m.clone()
                    },
                }
            })
        })
        .collect();
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    print_rows(
        &rows,
        json,
        &[
            "NODE",
            "MODULE",
            "PLACEMENT",
            "PID",
            "STATE",
            "RESTARTS",
            "MAILBOX",
            "TAKES",
        ],
        |r| {
            let m = &r.module;
            vec![
                r.node.to_owned(),
                m.name.clone(),
                m.placement.clone(),
                or_dash(m.pid.map(|p| p.to_string())),
                m.state.clone(),
                m.restarts.to_string(),
                or_dash(m.mailbox.map(|d| d.to_string())),
                or_dash(m.takes.clone()),
            ]
        },
    );
}

/// One line of `botbus topics`: a topic published on, or a pattern
/// subscribed to that nothing published on yet.
#[derive(Debug, Serialize)]
struct TopicRow {
    topic: String,
    /// `node/module` of each publisher.
    publishers: Vec<String>,
    /// `node/module` of each subscriber whose pattern matches.
    subscribers: Vec<String>,
    /// Messages published there since the publishers' nodes started.
    messages: u64,
    /// Messages a second, over the window.
    rate_hz: f64,
}

/// `botbus topics`: every topic published on, with its publishers, its
/// subscribers and its rate — the change in the publishers' counts between
/// `before` and `after`, `window` apart — then every pattern subscribed to
/// that no topic published on matches.
pub(crate) fn topics(before: &[NodeInfo], after: &[NodeInfo], window: Duration, json: bool) {
    use std::collections::BTreeMap;
    // `node/module` of every subscription `takes` accepts.
    let subscribers = |takes: &dyn Fn(&botbus::SubscriptionInfo) -> bool| -> Vec<String> {
        let mut names: Vec<String> = after
            .iter()
            .flat_map(|i| {
                i.subscriptions
                    .iter()
                    .filter(|s| takes(s))
                    .map(move |s| format!("{}/{}", i.node, s.module))
            })
            .collect();
        names.sort();
        names.dedup();
        names
    };
    let matching = |topic: &str| {
        subscribers(&|s: &botbus::SubscriptionInfo| {
            botbus::TopicPattern::parse(&s.pattern).is_ok_and(|p| p.matches(topic))
        })
    };
    let counts = |infos: &[NodeInfo]| -> BTreeMap<(String, String), u64> {
        infos
            .iter()
            .flat_map(|i| &i.publications)
            .map(|p| ((p.topic.clone(), p.module.clone()), p.messages))
            .collect()
    };
    let (was, now) = (counts(before), counts(after));
    let mut by_topic: BTreeMap<String, TopicRow> = BTreeMap::new();
    for ((topic, publisher), messages) in &now {
        let row = by_topic.entry(topic.clone()).or_insert_with(|| TopicRow {
            topic: topic.clone(),
            publishers: Vec::new(),
            subscribers: matching(topic),
            messages: 0,
            rate_hz: 0.0,
        });
        let earlier = was.get(&(topic.clone(), publisher.clone())).copied().unwrap_or(0);
        row.publishers.push(publisher.clone());
        row.messages += messages;
        row.rate_hz += messages.saturating_sub(earlier) as f64 / window.as_secs_f64();
    }
    let mut rows: Vec<TopicRow> = by_topic.into_values().collect();
    let mut patterns: Vec<&str> = after
        .iter()
        .flat_map(|i| i.subscriptions.iter().map(|s| s.pattern.as_str()))
        .filter(|pattern| {
            let pattern = botbus::TopicPattern::parse(pattern);
            !rows
                .iter()
                .any(|row| pattern.as_ref().is_ok_and(|p| p.matches(&row.topic)))
        })
        .collect();
    patterns.sort_unstable();
    patterns.dedup();
    rows.extend(patterns.into_iter().map(|pattern| TopicRow {
        topic: pattern.to_owned(),
        publishers: Vec::new(),
        subscribers: subscribers(&|s: &botbus::SubscriptionInfo| s.pattern == pattern),
        messages: 0,
        rate_hz: 0.0,
    }));
    let listed = |names: &[String]| match names {
        [] => "-".to_owned(),
        names => names.join(", "),
    };
    print_rows(&rows, json, &["TOPIC", "RATE", "PUBLISHERS", "SUBSCRIBERS"], |r| {
        vec![
            r.topic.clone(),
            match r.publishers.is_empty() {
                true => "-".to_owned(),
                false => format!("{:.1} Hz", r.rate_hz),
            },
            listed(&r.publishers),
            listed(&r.subscribers),
        ]
    });
}

/// A payload as JSON: JSON as it came, or `{"hex":…}` for postcard bytes
/// of a type the robot did not know (so could not send as JSON).
fn shown(payload: &Payload) -> serde_json::Value {
    match payload.encoded(CodecKind::Json) {
        Ok(json) => serde_json::from_slice(&json).unwrap_or(serde_json::Value::Null),
        Err(_) => {
            let hex = payload
                .encoded(CodecKind::Postcard)
                .map(|bytes| botbus::crates::core::auth::to_hex(&bytes))
                .unwrap_or_default();
            serde_json::json!({ "hex": hex })
        }
    }
}

/// A progress update's fraction done, if it carries one: an object with a
/// `fraction` from 0 to 1, or with `done` and `total`.
fn fraction(update: &serde_json::Value) -> Option<f64> {
    let value = match update.get("fraction") {
        Some(fraction) => fraction.as_f64()?,
        None => update.get("done")?.as_f64()? / update.get("total")?.as_f64()?,
    };
    (0.0..=1.0).contains(&value).then_some(value)
}

/// `botbus call <module> <json>`: asks, shows progress as it arrives, and
/// cancels the ask on Ctrl-C.
pub(crate) fn call(
    node: &Node,
    infos: &[NodeInfo],
    module: &str,
    json_text: &str,
    message_type: Option<String>,
    timeout: Duration,
    json: bool,
) -> Result<(), Failure> {
    let _: serde_json::Value =
        serde_json::from_str(json_text).map_err(|error| format!("bad JSON `{json_text}`: {error}"))?;
    let (at, name) = match module.split_once('/') {
        Some((at, name)) => (Some(at), name),
        None => (None, module),
    };
    // The node that placed a module on a worker does not know its types;
    // the worker's node does.
    let mut described: Vec<&botbus::ModuleInfo> = infos
        .iter()
        .filter(|i| at.is_none_or(|at| i.node == at))
        .filter_map(|i| i.modules.iter().find(|m| m.name == name))
        .collect();
    described.sort_by_key(|m| m.takes.is_none());
    let described = described.first().copied();
    let message_type = match (message_type, described) {
        (Some(given), _) => given,
        (None, Some(m)) => m.takes.clone().ok_or_else(|| {
            format!("module `{module}` does not say what it takes (it runs elsewhere, or takes anything): give --type")
        })?,
        (None, None) => return Err(format!("unknown module `{module}`").into()),
    };
    let payload = Payload::from_json(message_type, bytes::Bytes::copy_from_slice(json_text.as_bytes()));
    let (asker, to) = (node.clone(), module.to_owned());
    let outcome = node.block_on(async move {
        let client = asker.client("cli");
        let mut call = match client
            .ask_payload::<Payload>(&to, payload)
            .timeout(timeout)
            .start()
            .await
        {
            Ok(call) => call,
            Err(error) => return Err(error),
        };
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        loop {
            tokio::select! {
                event = call.next_event() => match event {
                    Some(CallEvent::Progress(update)) => {
                        let value = shown(&update);
                        if json {
                            println!("{}", serde_json::json!({ "progress": value }));
                        } else if let Some(done) = fraction(&value) {
                            let filled = (done * 30.0).round() as usize;
                            eprintln!("[{}{}] {:>3.0}%", "#".repeat(filled), " ".repeat(30 - filled), done * 100.0);
                        } else {
                            eprintln!("progress: {value}");
                        }
                    }
                    Some(CallEvent::Message(request)) => {
                        request.fail("the command line does not answer a callee's questions");
                    }
                    None => return call.reply().await.map(|reply| Some(shown(&reply))),
                },
                _ = &mut interrupted => {
                    call.cancel();
                    return Ok(None);
                }
            }
        }
    })?;
    match outcome {
        Ok(Some(reply)) if json => println!("{}", serde_json::json!({ "reply": reply })),
        Ok(Some(reply)) => println!("{reply}"),
        Ok(None) => {
            if json {
                println!("{}", serde_json::json!({ "cancelled": module }));
            }
            return Err(format!("interrupted: the ask to `{module}` was cancelled").into());
        }
        Err(AskError::Remote { module, message }) => {
            return Err(format!("`{module}` answered an error: {message}").into())
        }
        Err(error) => return Err(error.to_string().into()),
    }
    Ok(())
}

/// A message heard on a topic: the topic, who published it, and it.
pub(crate) type Heard = (String, String, Payload);

/// Subscribes this tool's node to `pattern`, passing what it hears on.
pub(crate) struct Listener {
    pub(crate) pattern: String,
    pub(crate) heard: tokio::sync::mpsc::UnboundedSender<Heard>,
}

impl botbus::Module for Listener {
    type Message = Payload;
    type Reply = ();

    async fn started(&mut self, ctx: &mut botbus::Context) -> Result<(), botbus::ModuleError> {
        ctx.subscribe(&self.pattern)
            .map_err(|error| botbus::ModuleError::new(error.to_string()))
    }

    async fn process(&mut self, payload: Payload, ctx: &mut botbus::Context) -> Result<(), botbus::ModuleError> {
        let topic = ctx.topic().unwrap_or_default().to_owned();
        let from = ctx.sender().unwrap_or_default().to_owned();
        let _ = self.heard.send((topic, from, payload));
        Ok(())
    }
}

/// `botbus echo <pattern>`: every message published on a matching topic,
/// as JSON, until Ctrl-C (or `count` messages).
pub(crate) fn echo(
    node: &Node,
    mut heard: tokio::sync::mpsc::UnboundedReceiver<Heard>,
    count: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    node.block_on(async move {
        let mut seen = 0;
        while count.is_none_or(|count| seen < count) {
            let (topic, from, payload) = tokio::select! {
                heard = heard.recv() => match heard {
                    Some(heard) => heard,
                    None => break,
                },
                _ = tokio::signal::ctrl_c() => break,
            };
            let body = shown(&payload);
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "topic": topic, "from": from, "name": payload.name(), "body": body })
                );
            } else {
                println!("{topic}  {}  {body}", payload.name());
            }
            seen += 1;
        }
    })?;
    Ok(())
}

/// `botbus hz <topic>`: the rate of messages on a topic, and the spread of
/// the intervals between them, over each window, until Ctrl-C (or
/// `windows` windows).
pub(crate) fn hz(
    node: &Node,
    mut heard: tokio::sync::mpsc::UnboundedReceiver<Heard>,
    window: Duration,
    windows: Option<u64>,
    json: bool,
) -> Result<(), Failure> {
    node.block_on(async move {
        let mut done = 0;
        let mut last: Option<std::time::Instant> = None;
        while windows.is_none_or(|windows| done < windows) {
            let mut intervals: Vec<f64> = Vec::new();
            let mut messages = 0u64;
            let end = tokio::time::Instant::now() + window;
            loop {
                tokio::select! {
                    heard = heard.recv() => {
                        if heard.is_none() { return; }
                        let now = std::time::Instant::now();
                        if let Some(last) = last {
                            intervals.push(now.duration_since(last).as_secs_f64());
                        }
                        last = Some(now);
                        messages += 1;
                    }
                    () = tokio::time::sleep_until(end) => break,
                    _ = tokio::signal::ctrl_c() => return,
                }
            }
            let rate = messages as f64 / window.as_secs_f64();
            let (min, max, std) = spread(&intervals);
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "rate_hz": rate, "messages": messages, "min_s": min, "max_s": max, "std_s": std })
                );
            } else {
                match messages {
                    0 => println!("no messages in {window:?}"),
                    _ => println!(
                        "average rate: {rate:.3} Hz  min: {:.4}s  max: {:.4}s  std dev: {:.5}s  window: {messages}",
                        min.unwrap_or(0.0),
                        max.unwrap_or(0.0),
                        std.unwrap_or(0.0)
                    ),
                }
            }
            done += 1;
        }
    })?;
    Ok(())
}

/// The least, greatest and standard deviation of `intervals`, if any.
fn spread(intervals: &[f64]) -> (Option<f64>, Option<f64>, Option<f64>) {
    if intervals.is_empty() {
        return (None, None, None);
    }
    let n = intervals.len() as f64;
    let mean = intervals.iter().sum::<f64>() / n;
    let variance = intervals.iter().map(|i| (i - mean).powi(2)).sum::<f64>() / n;
    let min = intervals.iter().copied().fold(f64::INFINITY, f64::min);
    let max = intervals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (Some(min), Some(max), Some(variance.sqrt()))
}

/// `botbus pub <topic> <json>`: publishes the message once, or `count`
/// times at `rate` per second; its type is `message_type`, or what every
/// subscriber of the topic takes.
pub(crate) fn publish(
    node: &Node,
    infos: &[NodeInfo],
    topic: &str,
    json_text: &str,
    message_type: Option<String>,
    rate: Option<f64>,
    count: u64,
) -> Result<(), Failure> {
    let _: serde_json::Value =
        serde_json::from_str(json_text).map_err(|error| format!("bad JSON `{json_text}`: {error}"))?;
    let message_type = match message_type {
        Some(given) => given,
        None => {
            let mut takes: Vec<&str> = infos
                .iter()
                .flat_map(|i| {
                    i.subscriptions
                        .iter()
                        .filter(|s| botbus::TopicPattern::parse(&s.pattern).is_ok_and(|p| p.matches(topic)))
                        .filter_map(move |s| i.modules.iter().find(|m| m.name == s.module)?.takes.as_deref())
                })
                .collect();
            takes.sort_unstable();
            takes.dedup();
            match takes[..] {
                [one] => one.to_owned(),
                [] => return Err(format!("no subscriber of `{topic}` says what it takes: give --type").into()),
                _ => return Err(format!("subscribers of `{topic}` take {}: give --type", takes.join(", ")).into()),
            }
        }
    };
    let payload = Payload::from_json(message_type, bytes::Bytes::copy_from_slice(json_text.as_bytes()));
    let (publisher, topic) = (node.clone(), topic.to_owned());
    node.block_on(async move {
        let client = publisher.client("cli");
        let period = rate.map(|rate| Duration::from_secs_f64(1.0 / rate));
        for sent in 0..count {
            if let (Some(period), true) = (period, sent > 0) {
                tokio::time::sleep(period).await;
            }
            client.publish_payload(&topic, payload.clone()).await?;
        }
        Ok::<(), botbus::SendError>(())
    })??;
    Ok(())
}
