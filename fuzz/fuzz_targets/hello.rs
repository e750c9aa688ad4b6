//! The hello: any bytes, in any pieces, give a hello or a handshake error,
//! never a panic; a hello that reads checks against ours and prints back as
//! one line that reads the same.
#![no_main]

use botbus_core::handshake::{check_hello, read_hello, HelloCodec, MAX_HELLO_LEN};
use botbus_core::Hello;
use botbus_fuzz::decode_in_pieces;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (splits, stream) = data.split_at(data.len().min(4));
    let ours = Hello::new("fuzz");
    for hello in decode_in_pieces(&mut HelloCodec::default(), splits, stream)
        .into_iter()
        .take(1)
    {
        let _ = check_hello(&ours, &hello);
        let line = hello.to_line();
        if line.len() <= MAX_HELLO_LEN {
            assert_eq!(read_hello(&line).expect("our own line reads"), hello);
        }
    }
    let _ = read_hello(stream);
});
