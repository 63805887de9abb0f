//! A second replica of a service on its own port-0 listeners, sharing the mesh's database and
//! settings (for tests of behaviour across replicas, e.g. live delivery over PostgreSQL).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use caremesh_runtime::{Listeners, ServiceName, StartError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::TestMesh;

/// A running extra replica; dropping it stops it.
pub struct SecondInstance {
    pub service: ServiceName,
    pub grpc_addr: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), StartError>>>,
}

impl SecondInstance {
    /// Stops the replica and waits until it has drained.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("replica task").expect("replica stopped cleanly");
        }
    }
}

impl Drop for SecondInstance {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl TestMesh {
    /// Starts another replica of `service` with the same configuration (database included) on
    /// new ports, and waits until it is SERVING.
    pub async fn start_second_instance(&self, service: ServiceName) -> SecondInstance {
        let grpc = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ops = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut config = self.config(service).clone();
        config.listen = grpc.local_addr().expect("address");
        config.ops_listen = ops.local_addr().expect("address");
        let grpc_addr = config.listen;
        let ops_addr = config.ops_listen;
        let env = Arc::clone(&self.env);
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone().cancelled_owned();
        let task = tokio::spawn(async move {
            caremesh_serve::serve_service(config, env.as_ref(), Listeners { grpc, ops }, stop).await
        });
        caremesh_serve::wait_ready(service, ops_addr, Duration::from_secs(30))
            .await
            .unwrap_or_else(|error| panic!("second {service} did not start: {error}"));
        SecondInstance {
            service,
            grpc_addr,
            shutdown,
            task: Some(task),
        }
    }

    /// An SDK client whose `service` endpoint is `addr` (e.g. a second replica).
    pub fn sdk_via(&self, service: ServiceName, addr: SocketAddr) -> caremesh_sdk::Client {
        let mut options = caremesh_sdk::ConnectOptions::new(self.pki().ca_cert(), "127.0.0.1");
        for each in ServiceName::ALL {
            options = options.with_endpoint(each, self.grpc_addr(each).to_string());
        }
        options = options.with_endpoint(service, addr.to_string());
        caremesh_sdk::Client::connect(&options).expect("SDK client")
    }
}
