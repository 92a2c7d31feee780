//! The codec of every `roster.v1` client and server: tonic-prost's, except that a message is
//! decoded from one contiguous slice instead of through tonic's buffer.
//!
//! prost reads a message a varint and a field at a time, and each step through tonic's
//! `DecodeBuf` advances a `BytesMut`, which costs more than the step itself; a CheckPermissions
//! batch of 100 items is about 600 such steps. tonic holds a whole message in one buffer before it
//! decodes it, so the slice is the message; when it is not, the codec falls back to the buffer.
//! Encoding and errors are tonic-prost's: a body that does not decode is INTERNAL, which rosterd
//! answers as INVALID_ARGUMENT `MALFORMED_REQUEST`.

use prost::Message;
use prost::bytes::Buf;
use std::marker::PhantomData;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// A [`Codec`] for `application/grpc+proto` messages `T` out and `U` in.
#[derive(Debug, Clone, Copy)]
pub struct SliceCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder(PhantomData)
    }
}

/// Decodes a `U` from the contiguous bytes of one message.
#[derive(Debug, Clone, Copy)]
pub struct SliceDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        let decoded = match buf.chunk() {
            whole if whole.len() == len => {
                let decoded = U::decode(whole);
                buf.advance(len);
                decoded
            }
            _ => U::decode(buf),
        };
        decoded.map(Some).map_err(|e| Status::internal(e.to_string()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
