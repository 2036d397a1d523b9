//! The HTTP-layer ceiling for the load benchmark (BENCHMARKS.md): warp
//! answering 200 after `serde_json` parses the body, nothing else.
//!
//!     cargo build --release --example bare_warp
//!     taskset -c 0 target/release/examples/bare_warp 127.0.0.1:8081

use warp::Filter;

#[tokio::main]
async fn main() {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8081".into())
        .parse()
        .expect("ADDR");
    let route = warp::path!("webhooks" / "iclosed")
        .and(warp::post())
        .and(warp::body::bytes())
        .map(
            |body: bytes::Bytes| match serde_json::from_slice::<serde_json::Value>(&body) {
                Ok(_) => warp::reply::with_status("{\"ok\":true}", warp::http::StatusCode::OK),
                Err(_) => {
                    warp::reply::with_status("{\"error\":\"invalid\"}", warp::http::StatusCode::BAD_REQUEST)
                }
            },
        );
    warp::serve(route).run(addr).await;
}
