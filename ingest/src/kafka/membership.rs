//! Removing a loader's static membership from its tenant's consumer group, so that its
//! partitions move to the other loaders at once.
//!
//! A loader with `--instance-id` is a *static* member (KIP-345): when it stops, librdkafka
//! deliberately does not leave the group, so that a restarted pod takes its partitions back
//! without a rebalance. When the loader is gone for good (a StatefulSet scaled down, a
//! hand-run loader retired) its partitions then sit unconsumed until the broker expires the
//! member: a session timeout on Kafka, never on some brokers (noida-db). Kafka's admin
//! client removes such a member with a LeaveGroup request (v3+) that names its
//! `group.instance.id` (`removeMembersFromConsumerGroup`); librdkafka has no such call, so
//! this module sends it itself: ApiVersions, FindCoordinator, LeaveGroup, encoded by the
//! `kafka-protocol` crate.
//!
//! It connects as the librdkafka clients do (`Security`): over TLS with the OpenSSL they
//! link (the same CA file, client certificate and key, broker host names verified), and
//! authenticated by SASL (SaslHandshake v1 and SaslAuthenticate, KIP-152) with PLAIN or
//! SCRAM-SHA-256/512 from the `rsasl` crate, before any other request.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    FindCoordinatorRequest, FindCoordinatorResponse, GroupId, LeaveGroupRequest, LeaveGroupResponse, RequestHeader,
    ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};
use openssl::ssl::SslConnector;
use rsasl::prelude::{Mechname, MessageSent, SASLClient, SASLConfig, State};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Sasl, Security, SecurityError};

/// Why removing members failed.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("no broker of {brokers:?} answered: {reason}")]
    Unreachable { brokers: String, reason: String },
    #[error("the broker does not remove static members (it speaks LeaveGroup up to v{max}; v3, Kafka 2.4, is needed)")]
    Unsupported { max: i16 },
    #[error(transparent)]
    Settings(#[from] SecurityError),
    #[error("TLS with {broker} failed: {reason}")]
    Tls { broker: String, reason: String },
    #[error("SASL authentication with {broker} failed: {reason}")]
    Authentication { broker: String, reason: String },
    #[error("{request}: the broker answered error {code} ({name})")]
    Broker {
        request: &'static str,
        code: i16,
        name: String,
    },
    #[error("{request}: {reason}")]
    Protocol { request: &'static str, reason: String },
}

/// What became of one instance id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Removal {
    /// It was a member and is not any more: the group rebalances without it.
    Removed,
    /// The group had no member with that instance id (it left already, or never joined).
    NotAMember,
}

/// The error codes a LeaveGroup answers per member when that member is not in the group.
const UNKNOWN_MEMBER_ID: i16 = 25;
const GROUP_ID_NOT_FOUND: i16 = 69;
/// The coordinator is moving or loading: asked again, it answers.
const RETRIABLE: &[i16] = &[
    14, // COORDINATOR_LOAD_IN_PROGRESS
    15, // COORDINATOR_NOT_AVAILABLE
    16, // NOT_COORDINATOR
];

/// Removes the static members `instance_ids` (each a consumer's `group.instance.id`) from
/// the consumer group `group`, through a broker of `brokers` (a bootstrap list). Returns,
/// per instance id, whether it was removed or was no member. Each request waits at most
/// `timeout`; a coordinator that is moving is asked again until `timeout` has passed.
pub async fn remove_static_members(
    brokers: &str,
    security: &Security,
    group: &str,
    instance_ids: &[String],
    timeout: Duration,
) -> Result<Vec<(String, Removal)>, MembershipError> {
    if instance_ids.is_empty() {
        return Ok(Vec::new());
    }
    let dialer = Dialer::new(security, timeout)?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match try_remove(&dialer, brokers, group, instance_ids).await {
            Err(MembershipError::Broker { code, .. })
                if RETRIABLE.contains(&code) && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            outcome => return outcome,
        }
    }
}

/// Why the brokers refuse this client's TLS or SASL, if they do: what a connection to the
/// bootstrap list, made as `remove_static_members` makes one, is refused with. `None` when
/// one is accepted, or when none answers at all (that is no refusal). For errors of
/// librdkafka clients that only say a request failed (the admin client gets no error
/// events).
pub async fn refusal(brokers: &str, security: &Security, timeout: Duration) -> Option<MembershipError> {
    let dialer = Dialer::new(security, timeout).ok()?;
    match dialer.to_any(brokers).await {
        Err(e @ (MembershipError::Tls { .. } | MembershipError::Authentication { .. })) => Some(e),
        _ => None,
    }
}

async fn try_remove(
    dialer: &Dialer,
    brokers: &str,
    group: &str,
    instance_ids: &[String],
) -> Result<Vec<(String, Removal)>, MembershipError> {
    let mut bootstrap = dialer.to_any(brokers).await?;
    let leave_version = bootstrap.version(ApiKey::LeaveGroup, 3, 5)?;
    let coordinator = bootstrap.find_coordinator(group).await?;
    let mut coordinator = if coordinator == bootstrap.address {
        bootstrap
    } else {
        dialer.to(&coordinator).await?
    };
    // The members' ids, where the broker lists them: Kafka removes a static member named by
    // its instance id alone, other brokers (Tansu) only by instance and member id.
    let known = coordinator.static_members(group).await?;
    let mut outcomes: Vec<(String, Removal)> = Vec::new();
    let mut leaving = Vec::new();
    for id in instance_ids {
        match &known {
            Some(members) => match members.iter().find(|(instance, _)| instance == id) {
                Some((_, member_id)) => leaving.push((id.clone(), member_id.clone())),
                None => outcomes.push((id.clone(), Removal::NotAMember)),
            },
            None => leaving.push((id.clone(), String::new())),
        }
    }
    if leaving.is_empty() {
        return Ok(outcomes);
    }
    let request = LeaveGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
        .with_members(
            leaving
                .iter()
                .map(|(id, member_id)| {
                    MemberIdentity::default()
                        .with_member_id(StrBytes::from_string(member_id.clone()))
                        .with_group_instance_id(Some(StrBytes::from_string(id.clone())))
                        .with_reason(
                            (leave_version >= 5)
                                .then(|| StrBytes::from_static_str("sightline: the loader left for good")),
                        )
                })
                .collect(),
        );
    let response: LeaveGroupResponse = coordinator
        .send(ApiKey::LeaveGroup, &request, leave_version, "LeaveGroup")
        .await?;
    // Kafka answers NONE at the top and a code per member; some brokers put a member's
    // UNKNOWN_MEMBER_ID at the top too, or do not echo the instance ids (then the members
    // come in the order asked).
    if ![0, UNKNOWN_MEMBER_ID, GROUP_ID_NOT_FOUND].contains(&response.error_code) {
        return Err(broker_error("LeaveGroup", response.error_code));
    }
    for (i, (id, _)) in leaving.iter().enumerate() {
        let echoed = response
            .members
            .iter()
            .find(|m| m.group_instance_id.as_ref().map(|s| s.as_str()) == Some(id.as_str()));
        let code = echoed
            .or_else(|| response.members.get(i))
            .map(|m| m.error_code)
            .unwrap_or(response.error_code);
        let outcome = match code {
            0 => Removal::Removed,
            UNKNOWN_MEMBER_ID | GROUP_ID_NOT_FOUND => Removal::NotAMember,
            code => return Err(broker_error("LeaveGroup", code)),
        };
        outcomes.push((id.clone(), outcome));
    }
    Ok(outcomes)
}

fn broker_error(request: &'static str, code: i16) -> MembershipError {
    MembershipError::Broker {
        request,
        code,
        name: error_name(code).to_string(),
    }
}

/// The names of the codes these requests answer (Kafka's `Errors`).
fn error_name(code: i16) -> &'static str {
    match code {
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        24 => "INVALID_GROUP_ID",
        25 => "UNKNOWN_MEMBER_ID",
        30 => "GROUP_AUTHORIZATION_FAILED",
        33 => "UNSUPPORTED_SASL_MECHANISM",
        34 => "ILLEGAL_SASL_STATE",
        35 => "UNSUPPORTED_VERSION",
        42 => "INVALID_REQUEST",
        58 => "SASL_AUTHENTICATION_FAILED",
        69 => "GROUP_ID_NOT_FOUND",
        82 => "FENCED_INSTANCE_ID",
        _ => "see Kafka's protocol error codes",
    }
}

/// The instance id a coordinator put into a static member's id, `<instance id>-<UUID>` (how
/// Kafka and Tansu make them), for brokers whose DescribeGroups leaves the instance id out.
fn instance_of(member_id: &str) -> Option<&str> {
    let (instance, uuid) = member_id.split_at_checked(member_id.len().checked_sub(37)?)?;
    let uuid = uuid.strip_prefix('-')?;
    (uuid.len() == 36 && uuid::Uuid::parse_str(uuid).is_ok() && !instance.is_empty()).then_some(instance)
}

/// A byte stream to a broker: TCP, or TLS over TCP.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens connections to brokers as `Security` says: TLS, SASL, ApiVersions.
struct Dialer {
    tls: Option<SslConnector>,
    sasl: Option<Sasl>,
    timeout: Duration,
}

impl Dialer {
    fn new(security: &Security, timeout: Duration) -> Result<Self, MembershipError> {
        Ok(Self {
            tls: match security.protocol.tls() {
                true => Some(security.tls_connector()?),
                false => None,
            },
            sasl: security.sasl.clone(),
            timeout,
        })
    }

    /// The first broker of the bootstrap list that answers ApiVersions (and accepts TLS and
    /// SASL). When none does, a TLS or SASL failure is the error (it names the settings to
    /// check); otherwise `Unreachable` with the last reason.
    async fn to_any(&self, brokers: &str) -> Result<Connection, MembershipError> {
        let mut last = None;
        for address in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match self.to(address).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e @ (MembershipError::Tls { .. } | MembershipError::Authentication { .. })) => e,
            Some(e) => MembershipError::Unreachable {
                brokers: brokers.to_string(),
                reason: e.to_string(),
            },
            None => MembershipError::Unreachable {
                brokers: brokers.to_string(),
                reason: "no address given".into(),
            },
        })
    }

    /// A connection to `address` (`host:port`), authenticated, with its API versions read.
    async fn to(&self, address: &str) -> Result<Connection, MembershipError> {
        let unreachable = |reason: String| MembershipError::Unreachable {
            brokers: address.to_string(),
            reason,
        };
        let timeout = self.timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| unreachable(format!("no connection within {timeout:?}")))?
            .map_err(|e| unreachable(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some(connector) => Box::new(self.handshake(connector, address, tcp).await?),
        };
        let mut connection = Connection {
            address: address.to_string(),
            stream,
            timeout,
            correlation: 0,
            versions: Vec::new(),
        };
        connection.api_versions().await?;
        if let Some(sasl) = &self.sasl {
            connection.authenticate(sasl).await?;
        }
        Ok(connection)
    }

    /// TLS over `tcp`, the broker's certificate checked against the CAs and `address`'s host.
    async fn handshake(
        &self,
        connector: &SslConnector,
        address: &str,
        tcp: TcpStream,
    ) -> Result<tokio_openssl::SslStream<TcpStream>, MembershipError> {
        let failed = |reason: String| MembershipError::Tls {
            broker: address.to_string(),
            reason,
        };
        // `host:port`, `[v6]:port`: the host the certificate must name.
        let host = address
            .rsplit_once(':')
            .map_or(address, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let ssl = connector
            .configure()
            .and_then(|c| c.into_ssl(host))
            .map_err(|e| failed(e.to_string()))?;
        let mut stream = tokio_openssl::SslStream::new(ssl, tcp).map_err(|e| failed(e.to_string()))?;
        let outcome = tokio::time::timeout(self.timeout, std::pin::Pin::new(&mut stream).connect()).await;
        match outcome {
            Err(_) => Err(failed(format!("no handshake within {:?}", self.timeout))),
            Ok(Err(e)) => {
                // OpenSSL's verdict on the certificate says more than the handshake's error.
                let verify = stream.ssl().verify_result();
                Err(failed(match verify.as_raw() {
                    0 => e.to_string(),
                    _ => format!(
                        "the broker's certificate was not accepted: {} (check {})",
                        verify.error_string(),
                        Security::CA_FILE_ENV
                    ),
                }))
            }
            Ok(Ok(())) => Ok(stream),
        }
    }
}

/// One connection to one broker, with the API versions it speaks.
struct Connection {
    address: String,
    stream: Box<dyn Io>,
    timeout: Duration,
    correlation: i32,
    /// (api key, min, max) as the broker's ApiVersions answer lists them.
    versions: Vec<(i16, i16, i16)>,
}

impl Connection {
    /// SASL (KIP-152): SaslHandshake v1 names the mechanism, then SaslAuthenticate carries
    /// the mechanism's messages until it finished (PLAIN: one; SCRAM: two, and the server's
    /// final message is verified).
    async fn authenticate(&mut self, sasl: &Sasl) -> Result<(), MembershipError> {
        let broker = self.address.clone();
        let failed = |reason: String| MembershipError::Authentication {
            broker: broker.clone(),
            reason,
        };
        let mechanism = sasl.mechanism.as_str();
        self.version(ApiKey::SaslHandshake, 1, 1)?;
        let offered: SaslHandshakeResponse = self
            .send(
                ApiKey::SaslHandshake,
                &SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism)),
                1,
                "SaslHandshake",
            )
            .await?;
        if offered.error_code != 0 {
            let offers: Vec<&str> = offered.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(failed(format!(
                "the broker does not offer {mechanism} ({}; it offers {offers:?})",
                error_name(offered.error_code)
            )));
        }
        let version = self.version(ApiKey::SaslAuthenticate, 0, 2)?;
        let config = SASLConfig::with_credentials(None, sasl.username.clone(), sasl.password.clone())
            .map_err(|e| failed(e.to_string()))?;
        let name = Mechname::parse(mechanism.as_bytes()).map_err(|e| failed(e.to_string()))?;
        let mut session = SASLClient::new(config)
            .start_suggested(&[name])
            .map_err(|e| failed(e.to_string()))?;
        let mut input: Option<Bytes> = None;
        loop {
            let mut message = Vec::new();
            let state = session
                .step(input.as_deref(), &mut message)
                // A SCRAM server says "unknown user" or "invalid proof" inside the exchange.
                .map_err(|e| {
                    failed(format!(
                        "{mechanism}: {e} (check {} and {})",
                        Security::SASL_USERNAME_ENV,
                        Security::SASL_PASSWORD_ENV
                    ))
                })?;
            if matches!(state, State::Finished(MessageSent::No)) {
                return Ok(());
            }
            let answer: SaslAuthenticateResponse = self
                .send(
                    ApiKey::SaslAuthenticate,
                    &SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(message)),
                    version,
                    "SaslAuthenticate",
                )
                .await?;
            if answer.error_code != 0 {
                let said = answer.error_message.as_ref().map(|m| m.to_string()).unwrap_or_default();
                return Err(failed(format!(
                    "{} ({}): {said} (check {} and {})",
                    error_name(answer.error_code),
                    answer.error_code,
                    Security::SASL_USERNAME_ENV,
                    Security::SASL_PASSWORD_ENV
                )));
            }
            if matches!(state, State::Finished(_)) {
                return Ok(());
            }
            input = Some(answer.auth_bytes);
        }
    }

    async fn api_versions(&mut self) -> Result<(), MembershipError> {
        // Version 0: every broker speaks it, and its answer lists every API's range.
        let response: ApiVersionsResponse = self
            .send(ApiKey::ApiVersions, &ApiVersionsRequest::default(), 0, "ApiVersions")
            .await?;
        if response.error_code != 0 {
            return Err(broker_error("ApiVersions", response.error_code));
        }
        self.versions = response
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        Ok(())
    }

    /// The highest version of `key` both sides speak within `[low, high]`.
    fn version(&self, key: ApiKey, low: i16, high: i16) -> Result<i16, MembershipError> {
        let (_, min, max) = self
            .versions
            .iter()
            .copied()
            .find(|(k, _, _)| *k == key as i16)
            .unwrap_or((key as i16, -1, -1));
        let chosen = max.min(high);
        if chosen < low.max(min) {
            return Err(match key {
                ApiKey::LeaveGroup => MembershipError::Unsupported { max },
                _ => MembershipError::Protocol {
                    request: "ApiVersions",
                    reason: format!("the broker speaks {key:?} v{min}-v{max}; v{low}-v{high} are spoken here"),
                },
            });
        }
        Ok(chosen)
    }

    /// The group's static members as (instance id, member id), when the broker describes
    /// groups with instance ids (DescribeGroups v4+); `None` when it does not.
    async fn static_members(&mut self, group: &str) -> Result<Option<Vec<(String, String)>>, MembershipError> {
        let Ok(version) = self.version(ApiKey::DescribeGroups, 4, 6) else {
            return Ok(None);
        };
        let request =
            DescribeGroupsRequest::default().with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
        let response: DescribeGroupsResponse = self
            .send(ApiKey::DescribeGroups, &request, version, "DescribeGroups")
            .await?;
        let Some(described) = response.groups.first() else {
            return Ok(Some(Vec::new()));
        };
        if described.error_code != 0 && described.error_code != GROUP_ID_NOT_FOUND {
            return Err(broker_error("DescribeGroups", described.error_code));
        }
        Ok(Some(
            described
                .members
                .iter()
                .filter_map(|m| {
                    let instance = match m.group_instance_id.as_ref().filter(|i| !i.is_empty()) {
                        Some(instance) => instance.to_string(),
                        None => instance_of(m.member_id.as_str())?.to_string(),
                    };
                    Some((instance, m.member_id.to_string()))
                })
                .collect(),
        ))
    }

    /// `host:port` of the group's coordinator.
    async fn find_coordinator(&mut self, group: &str) -> Result<String, MembershipError> {
        let version = self.version(ApiKey::FindCoordinator, 0, 6)?;
        let key = StrBytes::from_string(group.to_string());
        let request = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_key_type(0)
                .with_coordinator_keys(vec![key])
        } else {
            FindCoordinatorRequest::default().with_key(key).with_key_type(0)
        };
        let response: FindCoordinatorResponse = self
            .send(ApiKey::FindCoordinator, &request, version, "FindCoordinator")
            .await?;
        let (code, host, port) = if version >= 4 {
            let c = response.coordinators.first().ok_or(MembershipError::Protocol {
                request: "FindCoordinator",
                reason: "the answer names no coordinator".into(),
            })?;
            (c.error_code, c.host.to_string(), c.port)
        } else {
            (response.error_code, response.host.to_string(), response.port)
        };
        if code != 0 {
            return Err(broker_error("FindCoordinator", code));
        }
        Ok(format!("{host}:{port}"))
    }

    /// Sends one request at `version` and reads its answer.
    async fn send<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        request: &Req,
        version: i16,
        name: &'static str,
    ) -> Result<Resp, MembershipError> {
        let protocol = |reason: String| MembershipError::Protocol { request: name, reason };
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("sightline")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, Req::header_version(version))
            .and_then(|()| request.encode(&mut body, version))
            .map_err(|e| protocol(format!("encoding: {e}")))?;
        let mut frame = BytesMut::with_capacity(4 + body.len());
        frame.put_i32(i32::try_from(body.len()).map_err(|_| protocol("request too large".into()))?);
        frame.extend_from_slice(&body);
        let exchange = async {
            self.stream.write_all(&frame).await?;
            let size = self.stream.read_i32().await?;
            let mut answer = vec![0u8; usize::try_from(size).unwrap_or(0)];
            self.stream.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(Bytes::from(answer))
        };
        let mut answer = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| protocol(format!("no answer from {} within {:?}", self.address, self.timeout)))?
            .map_err(|e| protocol(format!("{}: {e}", self.address)))?;
        let header = ResponseHeader::decode(&mut answer, Resp::header_version(version))
            .map_err(|e| protocol(format!("decoding the header: {e}")))?;
        if header.correlation_id != self.correlation {
            return Err(protocol(format!(
                "answer {} to request {}",
                header.correlation_id, self.correlation
            )));
        }
        Resp::decode(&mut answer, version).map_err(|e| protocol(format!("decoding: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_read_from_static_member_ids() {
        assert_eq!(
            instance_of("loader-1.acme-e16f0738-bd3f-4c0e-8558-e5abce42c03c"),
            Some("loader-1.acme")
        );
        assert_eq!(instance_of("e16f0738-bd3f-4c0e-8558-e5abce42c03c"), None);
        assert_eq!(instance_of("loader-1.acme-not-a-uuid-at-all-xxxxxxxxxxxxxxxxxxx"), None);
        assert_eq!(instance_of("short"), None);
    }

    #[tokio::test]
    async fn an_absent_broker_is_unreachable_and_a_bad_tls_setting_stops_before_connecting() {
        let e = remove_static_members(
            "127.0.0.1:1",
            &Security::default(),
            "g",
            &["a".into()],
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, MembershipError::Unreachable { .. }), "{e}");
        // TLS with a CA file that is gone: refused before any connection, naming the variable.
        let security = Security {
            protocol: crate::kafka::Protocol::Ssl,
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Security::default()
        };
        let e = remove_static_members("127.0.0.1:1", &security, "g", &["a".into()], Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(matches!(e, MembershipError::Settings(_)), "{e}");
        assert!(
            e.to_string()
                .starts_with("SIGHTLINE_KAFKA_CA_FILE: /nonexistent/ca.pem"),
            "{e}"
        );
    }
}
