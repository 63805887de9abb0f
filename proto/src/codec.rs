//! The protobuf codec of every caremesh client and server: tonic-prost's, except that a message
//! that does not decode is the caller's mistake, INVALID_ARGUMENT, where tonic-prost answers
//! INTERNAL (as gRPC's status-code guide suggests). caremesh keeps INTERNAL for its own faults, so
//! that an INTERNAL always means a bug worth a look.

use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstDecoder, ProstEncoder};

/// The codec named in the generated clients and servers (`codec_path` in `build.rs`).
#[derive(Debug, Clone)]
pub struct CaremeshCodec<T, U> {
    _types: PhantomData<(T, U)>,
}

impl<T, U> Default for CaremeshCodec<T, U> {
    fn default() -> Self {
        Self { _types: PhantomData }
    }
}

impl<T, U> Codec for CaremeshCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(ProstDecoder::default())
    }
}

/// tonic-prost's decoder with decode failures reported as INVALID_ARGUMENT.
#[derive(Debug, Clone, Default)]
pub struct StrictDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        self.0.decode(buf).map_err(|status| {
            Status::invalid_argument(format!(
                "the message is not a valid protobuf encoding of this method's request ({})",
                status.message()
            ))
        })
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
