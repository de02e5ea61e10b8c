//! `--quick`: P2, P3 and P4m alone, printed (BENCHMARKS.md untouched), to
//! judge a change (`FRAMEGATE_SERVER_BIN` names the server;
//! `FRAMEGATE_QUICK_ROUNDS` the P4m rounds, 3 unless set).

use crate::{medium, setup, small_reads};

pub(crate) async fn run() {
    let env = setup(true);
    let [fg_direct, ngx_seq, fg_via, ngx_h2] = small_reads(&env, 7).await;
    println!(
        "P2 {:.2} ms vs {:.2} ms: {:.2}x",
        fg_direct * 1e3,
        ngx_seq * 1e3,
        ngx_seq / fg_direct
    );
    println!(
        "P3 {:.2} ms vs {:.2} ms: {:.2}x",
        fg_via * 1e3,
        ngx_h2 * 1e3,
        ngx_h2 / fg_via
    );
    let rounds = std::env::var("FRAMEGATE_QUICK_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let (fg_medium, ngx_medium) = medium::medium_reads(&env, rounds).await;
    println!(
        "P4m {:.1} ms vs {:.1} ms: {:.2}x",
        fg_medium * 1e3,
        ngx_medium * 1e3,
        ngx_medium / fg_medium
    );
}
