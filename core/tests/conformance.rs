//! The conformance suite of `signalbox::testing::conformance` over the
//! in-memory transport, and proof that the suite can fail: transports that
//! misreport closes or liveness do not pass.

use async_trait::async_trait;
use signalbox::Hub;
use signalbox::testing::conformance::{self, CHECKS, Endpoint, Memory, Transport};
use signalbox::transport::CloseKind;

signalbox::conformance_tests!(Memory);

/// The in-memory transport, with something about it claimed wrongly.
struct Misreported {
    /// Claims the close codes are QUIC's.
    codes: bool,
    /// Claims to detect dead peers itself.
    liveness: bool,
}

#[async_trait]
impl Transport for Misreported {
    async fn serve(&self, hub: Hub) -> Result<Box<dyn Endpoint>, String> {
        Memory.serve(hub).await
    }

    fn close_code(&self, kind: CloseKind) -> Option<u16> {
        if self.codes {
            Some(match kind {
                CloseKind::Normal => 0,
                CloseKind::GoingAway => 1,
                CloseKind::Policy => 3,
                CloseKind::Internal => 4,
                _ => 2,
            })
        } else {
            Memory.close_code(kind)
        }
    }

    fn liveness_by_transport(&self) -> bool {
        self.liveness
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_close_codes_fail_the_close_codes_check() {
    let transport = Misreported {
        codes: true,
        liveness: false,
    };
    let failure = conformance::run_check(&transport, "close_codes")
        .await
        .unwrap_err();
    assert_eq!(failure.check, "close_codes");
    assert!(failure.message.contains("code 0"), "{failure}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimed_liveness_fails_the_heartbeat_check() {
    let transport = Misreported {
        codes: false,
        liveness: true,
    };
    let failure = conformance::run_check(&transport, "heartbeat")
        .await
        .unwrap_err();
    assert!(failure.message.contains("not kept"), "{failure}");
}

#[tokio::test]
async fn an_unknown_check_is_a_failure_not_a_pass() {
    let failure = conformance::run_check(&Memory, "no_such_check")
        .await
        .unwrap_err();
    assert!(failure.message.contains("no check named"), "{failure}");
    assert!(!CHECKS.contains(&"no_such_check"));
}
