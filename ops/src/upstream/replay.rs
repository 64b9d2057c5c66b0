//! Request bodies that can be sent again: a call that never reached a
//! replica is retried on another, which needs its body twice. tonic encodes
//! a unary request (and a server-streaming one) synchronously, so its body
//! is complete the moment the call starts; [`Captured::capture`] takes what
//! is ready without waiting. A client stream still being produced (a
//! heartbeat stream, a publish) is passed on as it comes and is not
//! retried: its caller reconnects. Nothing here sends anything.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::FutureExt as _;
use http_body::Frame;
use http_body_util::BodyExt as _;
use tonic::body::Body;

/// Most bytes of one request kept for a second attempt.
pub(super) const MAX_REPLAY_BYTES: usize = 4 * 1024 * 1024;

/// A request body, whole (and so replayable) or still streaming.
pub(super) enum Captured {
    Whole(Bytes),
    /// Taken by the first attempt.
    Streaming(Option<Prefixed>),
}

impl Captured {
    /// Reads what `body` has ready, up to `limit` bytes, without waiting.
    pub(super) fn capture(mut body: Body, limit: usize) -> Result<Captured, tonic::Status> {
        let mut whole = BytesMut::new();
        let mut head = VecDeque::new();
        loop {
            match body.frame().now_or_never() {
                // Nothing ready: a stream the caller is still producing.
                None => break,
                Some(None) => return Ok(Captured::Whole(whole.freeze())),
                Some(Some(Err(status))) => return Err(status),
                Some(Some(Ok(frame))) => {
                    let is_data = frame.is_data();
                    if let Some(data) = frame.data_ref().filter(|_| is_data) {
                        whole.extend_from_slice(data);
                    }
                    head.push_back(frame);
                    if !is_data || whole.len() > limit {
                        break;
                    }
                }
            }
        }
        Ok(Captured::Streaming(Some(Prefixed { head, rest: body })))
    }

    /// Whether another attempt can be made.
    pub(super) fn replayable(&self) -> bool {
        match self {
            Captured::Whole(_) => true,
            Captured::Streaming(body) => body.is_some(),
        }
    }

    /// The body for the next attempt; `None` once a streaming body is taken.
    pub(super) fn attempt(&mut self) -> Option<Body> {
        match self {
            Captured::Whole(bytes) => Some(Body::new(http_body_util::Full::new(bytes.clone()))),
            Captured::Streaming(body) => body.take().map(Body::new),
        }
    }
}

/// The frames read while capturing, then the rest of the body.
pub(super) struct Prefixed {
    head: VecDeque<Frame<Bytes>>,
    rest: Body,
}

impl http_body::Body for Prefixed {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, tonic::Status>>> {
        let this = self.get_mut();
        if let Some(frame) = this.head.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        Pin::new(&mut this.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_empty() && self.rest.is_end_stream()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn collect(body: Body) -> Vec<u8> {
        body.collect().await.expect("body").to_bytes().to_vec()
    }

    #[tokio::test]
    async fn a_complete_body_is_replayed_every_attempt() {
        let body = Body::new(http_body_util::Full::new(Bytes::from_static(b"hello")));
        let mut c = Captured::capture(body, 1024).expect("capture");
        assert!(matches!(c, Captured::Whole(_)));
        for _ in 0..2 {
            assert_eq!(collect(c.attempt().expect("again")).await, b"hello");
        }
    }

    #[tokio::test]
    async fn a_stream_still_being_produced_is_sent_once_whole() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, tonic::Status>>(4);
        tx.send(Ok(Frame::data(Bytes::from_static(b"first "))))
            .await
            .expect("send");
        let body = Body::new(http_body_util::StreamBody::new(
            tokio_stream_like::Receiver(rx),
        ));
        let mut c = Captured::capture(body, 1024).expect("capture");
        assert!(matches!(c, Captured::Streaming(_)));
        let first = c.attempt().expect("first attempt");
        assert!(c.attempt().is_none(), "a stream is not sent twice");
        tx.send(Ok(Frame::data(Bytes::from_static(b"second"))))
            .await
            .expect("send");
        drop(tx);
        assert_eq!(collect(first).await, b"first second");
    }

    /// An mpsc receiver as a `Stream` (tokio-stream is not a dependency).
    mod tokio_stream_like {
        pub(super) struct Receiver<T>(pub(super) tokio::sync::mpsc::Receiver<T>);

        impl<T> futures::Stream for Receiver<T> {
            type Item = T;
            fn poll_next(
                mut self: std::pin::Pin<&mut Self>,
                cx: &mut std::task::Context<'_>,
            ) -> std::task::Poll<Option<T>> {
                self.0.poll_recv(cx)
            }
        }
    }
}
