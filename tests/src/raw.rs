//! Calls with hand-made bodies: any bytes to any method path, the answer's bytes back. For sending
//! what the generated clients cannot: messages built from descriptors, and bytes that do not decode.

use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Request, Status};

/// Sends and receives message bodies as they are.
#[derive(Debug, Clone, Copy, Default)]
pub struct BytesCodec;

impl Codec for BytesCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = BytesCodec;
    type Decoder = BytesCodec;

    fn encoder(&mut self) -> Self::Encoder {
        BytesCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesCodec
    }
}

impl Encoder for BytesCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for BytesCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut body = vec![0; src.remaining()];
        src.copy_to_slice(&mut body);
        Ok(Some(body))
    }
}

/// A unary call of `path` (`/package.Service/Method`) with `body` as the request message.
pub async fn unary(channel: &Channel, path: &str, body: Request<Vec<u8>>) -> Result<Vec<u8>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path: tonic::codegen::http::uri::PathAndQuery =
        path.parse().map_err(|_| Status::invalid_argument("a method path"))?;
    grpc.unary(body, path, BytesCodec).await.map(tonic::Response::into_inner)
}
