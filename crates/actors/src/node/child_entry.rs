//! The child side of a child module: a node that hosts one module of its
//! parent's, linked to it over its own stdin/stdout.

use botbus_transport_stdio::StdioTransport;

use super::builder::NodeBuilder;
use super::options::{Process, Thread};
use super::FOREVER;
use crate::link::{establish_link, LinkConfig, LinkError, Role};
use crate::router::ModuleStatus;

impl NodeBuilder {
    /// The child side of a child module; see [`NodeBuilder::start`].
    pub(super) fn run_as_child(mut self, module: &str, node_name: &str) -> ! {
        let fail = |code: i32, why: String| -> ! {
            eprintln!("ERROR botbus child `{module}`: {why}");
            std::process::exit(code)
        };
        // First of all: make the protocol stream private.
        let link =
            StdioTransport::link_to_parent().unwrap_or_else(|e| fail(1, format!("cannot take stdin/stdout: {e}")));
        self.describes = false; // the parent describes the module
        let names: Vec<String> = self.modules.iter().map(|m| m.name.clone()).collect();
        let Some(mut spec) = std::mem::take(&mut self.modules).into_iter().find(|m| m.name == module) else {
            fail(
                2,
                format!("this binary registers no module `{module}` (it has {names:?})"),
            )
        };
        if spec.launch.is_none() {
            fail(
                2,
                format!("module `{module}` is an external program, not code in this binary"),
            );
        }
        spec.options.process = Process::This;
        spec.options.thread = Thread::System;
        spec.options.cpus = None; // the parent started this process on them
        self.pool_threads = 0; // nothing runs on a pool here
                               // The child's one link is to its parent: the endpoints the parent
                               // listens on and joins are the parent's (a child that listened too
                               // would find them taken), and so are its remote workers.
        self.listens.clear();
        self.joins.clear();
        self.worker = false;
        self.name = node_name.to_owned();
        let node = self.start_node().unwrap_or_else(|e| fail(1, e.to_string()));
        // The link first, and the parent's announcement, so that the
        // module's `started` hook can already reach the parent's modules.
        // The parent made this process and holds its pipes: no token.
        let router = node.shared.router.clone();
        let config = LinkConfig {
            token: None,
            ..node.shared.link.clone()
        };
        let linked = node.block_on(async move {
            let mut changes = router.watch_topology();
            let link = establish_link(router.clone(), Box::new(link), &config, Role::Accepting, None).await?;
            let announced = async {
                loop {
                    changes.borrow_and_update();
                    if link.announced() || link.is_closed() || changes.changed().await.is_err() {
                        return;
                    }
                }
            };
            let _ = tokio::time::timeout(config.handshake_timeout, announced).await;
            Ok::<_, LinkError>(())
        });
        match linked {
            Ok(Ok(())) => {}
            Ok(Err(error)) => fail(1, format!("no link to the parent: {error}")),
            Err(error) => fail(1, error.to_string()),
        }
        let spawner = node.clone();
        if let Ok(Err(error)) = node.block_on(async move { spawner.spawn_spec(spec).await }) {
            // The parent heard of it as a `down`; this is for its log.
            eprintln!("ERROR botbus child `{module}`: {error}");
        }
        let watcher = node.clone();
        let name = module.to_owned();
        let _ = node.block_on(async move {
            watcher
                .wait_until("the parent to go or the module to end", FOREVER, |node| {
                    let gone = matches!(
                        node.status(&name),
                        Some(ModuleStatus::Stopped | ModuleStatus::Failed(_))
                    );
                    node.peers().is_empty() || gone
                })
                .await
        });
        let code = match node.status(module) {
            Some(ModuleStatus::Failed(_)) => 70, // EX_SOFTWARE
            _ => 0,
        };
        node.shutdown_blocking();
        std::process::exit(code)
    }
}
