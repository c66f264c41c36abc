//! The wire codec of the mesh's request-response protocols: each message is
//! a big-endian `u32` length and that many bytes of bincode, refused whole
//! when the length is over the protocol's limit ([`MAX_MESH_MESSAGE_BYTES`]
//! for the main one).

use std::io;
use std::marker::PhantomData;

use bincode::Options;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::request_response::Codec;
use libp2p::StreamProtocol;
use serde::de::DeserializeOwned;
use serde::Serialize;
use zeromesh_protocol::limits::MAX_MESH_MESSAGE_BYTES;

/// The protocol name, versioned: a node speaking another version is not
/// offered this one.
pub const MESH_PROTOCOL: StreamProtocol = StreamProtocol::new("/zeromesh/rpc/2");

fn options(limit: usize) -> impl Options {
    bincode::DefaultOptions::new().with_fixint_encoding().with_limit(limit as u64)
}

/// Encodes `message`, refusing it when it would exceed the mesh message limit.
pub fn encode<T: Serialize>(message: &T) -> io::Result<Vec<u8>> {
    encode_within(message, MAX_MESH_MESSAGE_BYTES)
}

/// Encodes `message`, refusing it when it would exceed `limit` bytes.
pub fn encode_within<T: Serialize>(message: &T, limit: usize) -> io::Result<Vec<u8>> {
    options(limit).serialize(message).map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Decodes `bytes`; any trailing or missing byte is an error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    decode_within(bytes, MAX_MESH_MESSAGE_BYTES)
}

/// Decodes `bytes` of a protocol whose messages are at most `limit` bytes.
pub fn decode_within<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> io::Result<T> {
    options(limit)
        .reject_trailing_bytes()
        .deserialize(bytes)
        .map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))
}

/// Encodes `message` as one frame (length and bytes), refusing it when its
/// bytes would exceed `limit`.
pub fn encode_frame<T: Serialize>(message: &T, limit: usize) -> io::Result<Vec<u8>> {
    let bytes = encode_within(message, limit)?;
    let mut frame = Vec::with_capacity(4 + bytes.len());
    // `limit` is at most MAX_MESH_MESSAGE_BYTES, which fits in a u32.
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bytes);
    Ok(frame)
}

/// Reads one frame and decodes it, refusing a length over `limit` before
/// reading its bytes.
pub async fn read_frame<T: AsyncRead + Unpin + Send, M: DeserializeOwned>(io: &mut T, limit: usize) -> io::Result<M> {
    let mut length = [0u8; 4];
    io.read_exact(&mut length).await?;
    let length = u32::from_be_bytes(length) as usize;
    if length > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("mesh message of {length} bytes is over the limit of {limit} bytes"),
        ));
    }
    let mut bytes = vec![0u8; length];
    io.read_exact(&mut bytes).await?;
    decode_within(&bytes, limit)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, frame: Vec<u8>) -> io::Result<()> {
    io.write_all(&frame).await?;
    io.close().await
}

/// A length-prefixed bincode codec for the request type `Q` and response
/// `A`, whose messages are at most `LIMIT` bytes.
pub struct BincodeCodec<Q, A, const LIMIT: usize = MAX_MESH_MESSAGE_BYTES>(PhantomData<fn() -> (Q, A)>);

impl<Q, A, const LIMIT: usize> Default for BincodeCodec<Q, A, LIMIT> {
    fn default() -> Self {
        BincodeCodec(PhantomData)
    }
}

impl<Q, A, const LIMIT: usize> Clone for BincodeCodec<Q, A, LIMIT> {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl<Q, A, const LIMIT: usize> Codec for BincodeCodec<Q, A, LIMIT>
where
    Q: Serialize + DeserializeOwned + Send + 'static,
    A: Serialize + DeserializeOwned + Send + 'static,
{
    type Protocol = StreamProtocol;
    type Request = Q;
    type Response = A;

    async fn read_request<T: AsyncRead + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Q> {
        read_frame(io, LIMIT).await
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<A> {
        read_frame(io, LIMIT).await
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Q,
    ) -> io::Result<()> {
        write_frame(io, encode_frame(&request, LIMIT)?).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: A,
    ) -> io::Result<()> {
        write_frame(io, encode_frame(&response, LIMIT)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_over_the_limit_is_refused_before_it_is_read() {
        let mut frame = ((MAX_MESH_MESSAGE_BYTES + 1) as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(&[0; 16]);
        let result: io::Result<Vec<u8>> =
            futures::executor::block_on(read_frame(&mut frame.as_slice(), MAX_MESH_MESSAGE_BYTES));
        let error = result.expect_err("an over-limit frame must be refused");
        assert!(error.to_string().contains("over the limit"), "{error}");
    }

    #[test]
    fn frames_round_trip_and_trailing_bytes_are_refused() {
        let mut buffer = Vec::new();
        futures::executor::block_on(write_frame(
            &mut futures::io::Cursor::new(&mut buffer),
            encode_frame(&(7u64, "x".to_string()), MAX_MESH_MESSAGE_BYTES).expect("encodes"),
        ))
        .expect("writing to memory works");
        let decoded: (u64, String) =
            futures::executor::block_on(read_frame(&mut buffer.as_slice(), MAX_MESH_MESSAGE_BYTES))
                .expect("round trip");
        assert_eq!(decoded, (7, "x".to_string()));
        let mut bytes = encode(&5u64).expect("encodes");
        bytes.push(0);
        assert!(decode::<u64>(&bytes).is_err());
    }
}
