//! Public types are `Send`/`Sync` where users will need them to be: checked
//! at compile time.

#![allow(dead_code)]

fn is_send<T: Send>() {}
fn is_sync<T: Sync>() {}

#[test]
fn public_types_cross_threads() {
    is_send::<botbus::Node>();
    is_sync::<botbus::Node>();
    is_send::<botbus::Client>();
    is_sync::<botbus::Client>();
    is_send::<botbus::Context>();
    is_sync::<botbus::Context>();
    is_send::<botbus::Call<u32>>();
    is_send::<botbus::Payload>();
    is_sync::<botbus::Payload>();
    is_send::<botbus::AskError>();
    is_sync::<botbus::AskError>();
    is_send::<botbus::NodeError>();
    is_send::<botbus::LinkError>();
    is_send::<botbus::crates::core::Envelope>();
    is_send::<Box<dyn botbus::crates::core::Link>>();
}

/// An ask is a `Send` future, so it can be spawned on any runtime.
#[test]
fn ask_futures_are_send() {
    fn check(client: &botbus::Client) {
        let ask = client.ask::<u32, u32>("m", 1);
        is_send_future(std::future::IntoFuture::into_future(ask));
    }
    fn is_send_future<F: std::future::Future + Send>(_: F) {}
    let _ = check;
}
