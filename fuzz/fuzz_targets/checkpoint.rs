//! C2SP checkpoints and signed notes (`caremesh_tlog::checkpoint`) on arbitrary text: the body
//! parser, the verifier-key parser and the signed-note verifier (fixed key
//! `common::NOTE_KEY_NAME`). None may panic. A parsed body prints back to exactly the input, a
//! parsed verifier key round-trips through its text form, and a verified note starts with the
//! body of the checkpoint it yields.
#![no_main]

mod common;

use caremesh_tlog::checkpoint::{Checkpoint, NoteVerifier};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(checkpoint) = Checkpoint::parse_body(text) {
        assert_eq!(checkpoint.body(), text);
    }
    if let Ok(verifier) = NoteVerifier::parse(text) {
        assert_eq!(NoteVerifier::parse(&verifier.to_text()).as_ref(), Ok(&verifier));
    }
    let verifier = common::note_signer().verifier();
    let opened = verifier.open_checkpoint(text, None);
    match verifier.open_note(text) {
        Ok(body) => {
            assert!(text.starts_with(body));
            match opened {
                Ok(checkpoint) => {
                    assert_eq!(checkpoint.body(), body);
                    let origin = checkpoint.origin.clone();
                    assert_eq!(verifier.open_checkpoint(text, Some(&origin)), Ok(checkpoint));
                }
                Err(_) => assert!(Checkpoint::parse_body(body).is_err()),
            }
        }
        Err(_) => assert!(opened.is_err()),
    }
});
