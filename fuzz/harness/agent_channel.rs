// Fuzz harness, shared by fuzz/fuzz_targets/agent_channel.rs and the replay test
// protocol/tests/fuzz_corpus.rs. The input is what a hostile guest writes to its agent
// console: the first byte picks the size of the pieces the stream arrives in, the rest is
// the stream. Every message that decodes must encode again to the same message, and the
// decoder must never hold more than one frame's worth of bytes. The same bytes are also
// decoded as one payload of each direction (the guest agent decodes host messages).
// Accepted: the stream was only whole messages, or the bytes were one message's payload.

use detvm_protocol::channel::AgentChannel;
use detvm_protocol::frame::{Decoder, HEADER_LEN, MAX_PAYLOAD};
use detvm_protocol::message::{
    decode_agent, decode_host, encode_agent, encode_host, AgentMessage, HostMessage, MessageError,
};

pub fn run(data: &[u8]) -> Result<(), String> {
    let Some((&piece, stream)) = data.split_first() else {
        return Err("empty".into());
    };
    let mut first_error = None;
    let (mut messages, mut errors) = (0, 0);
    let mut channel = AgentChannel::new();
    let mut decoder = Decoder::new();
    for chunk in stream.chunks(usize::from(piece) + 1) {
        for item in channel.push(chunk) {
            match item {
                Ok(message) => {
                    agent_round_trip(&message);
                    messages += 1;
                }
                Err(e) => {
                    first_error.get_or_insert(e.to_string());
                    errors += 1;
                }
            }
        }
        decoder.push(chunk);
        while decoder.next_frame().is_some() {}
        assert!(
            decoder.buffered().len() < HEADER_LEN + MAX_PAYLOAD,
            "the decoder holds {} bytes",
            decoder.buffered().len()
        );
    }
    let agent = decode_agent(stream).inspect(agent_round_trip);
    let host = decode_host(stream).inspect(host_round_trip);
    if (messages > 0 && errors == 0) || agent.is_ok() || host.is_ok() {
        return Ok(());
    }
    Err(first_error.unwrap_or_else(|| format!("no message; as a payload: {agent:?}")))
}

fn agent_round_trip(message: &AgentMessage) {
    match encode_agent(message) {
        Ok(bytes) => {
            let again = AgentChannel::new().push(&bytes);
            assert_eq!(again, vec![Ok(message.clone())]);
        }
        // Re-encoding may add `null` fields the input left out: only over the limit.
        Err(MessageError::TooLarge { .. }) => {}
        Err(e) => panic!("a decoded agent message does not encode: {e}"),
    }
}

fn host_round_trip(message: &HostMessage) {
    match encode_host(message) {
        Ok(bytes) => {
            let mut decoder = Decoder::new();
            decoder.push(&bytes);
            let payload = decoder.next_frame().expect("a whole frame").expect("valid");
            assert_eq!(decode_host(&payload).as_ref(), Ok(message));
        }
        Err(MessageError::TooLarge { .. }) => {}
        Err(e) => panic!("a decoded host message does not encode: {e}"),
    }
}
