//! The introspection commands: `botbus nodes`, `modules`, `topics` and
//! `call`, against a running robot. Each joins the robot at an endpoint as a
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
    }
    let rows: Vec<Row<'_>> = infos
        .iter()
        .map(|i| Row {
            node: &i.node,
            pid: i.pid,
            modules: i.modules.len(),
            peers: &i.peers,
        })
        .collect();
    print_rows(&rows, json, &["NODE", "PID", "MODULES", "PEERS"], |r| {
        vec![
            r.node.to_owned(),
            r.pid.to_string(),
            r.modules.to_string(),
            r.peers.join(", "),
        ]
    });
}

/// `botbus modules`.
pub(crate) fn modules(infos: &[NodeInfo], json: bool) {
    #[derive(Serialize)]
    struct Row<'a> {
        node: &'a str,
        #[serde(flatten)]
        module: &'a botbus::ModuleInfo,
    }
    let rows: Vec<Row<'_>> = infos
        .iter()
        .flat_map(|i| {
            i.modules.iter().map(move |m| Row {
                node: &i.node,
                module: m,
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
            let m = r.module;
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

/// `botbus topics`: who subscribes to what.
pub(crate) fn topics(infos: &[NodeInfo], json: bool) {
    #[derive(Serialize)]
    struct Row<'a> {
        pattern: &'a str,
        node: &'a str,
        module: &'a str,
    }
    let mut rows: Vec<Row<'_>> = infos
        .iter()
        .flat_map(|i| {
            i.subscriptions.iter().map(move |s| Row {
                pattern: &s.pattern,
                node: &i.node,
                module: &s.module,
            })
        })
        .collect();
    rows.sort_by(|a, b| (a.pattern, a.node, a.module).cmp(&(b.pattern, b.node, b.module)));
    print_rows(&rows, json, &["PATTERN", "NODE", "MODULE"], |r| {
        vec![r.pattern.to_owned(), r.node.to_owned(), r.module.to_owned()]
    });
}

/// A payload as JSON text: JSON as it came, or `{"name":…,"hex":…}` for a
/// body this tool cannot read.
fn shown(payload: &Payload) -> serde_json::Value {
    match payload.encoded(CodecKind::Json) {
        Ok(json) => serde_json::from_slice(&json).unwrap_or(serde_json::Value::Null),
        Err(_) => {
            let hex: String = payload
                .encoded(CodecKind::Postcard)
                .map(|bytes| bytes.iter().map(|b| format!("{b:02x}")).collect())
                .unwrap_or_default();
            serde_json::json!({ "name": payload.name(), "hex": hex })
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
    let described = infos
        .iter()
        .filter(|i| at.is_none_or(|at| i.node == at))
        .find_map(|i| i.modules.iter().find(|m| m.name == name));
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
