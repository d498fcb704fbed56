//! Every NATS authentication method against a real `nats-server`: accepted
//! with the right credentials (proven by a round trip), an `Auth` error,
//! promptly, with wrong ones. NKeys and JWTs are generated here; JWT cases
//! run the server in operator mode with a memory resolver.

use std::time::{Duration, Instant};

use data_encoding::BASE64URL_NOPAD;
use nkeys::KeyPair;
use pubsub_nats::NatsConfig;
use pubsub_nats::{Config, ErrorKind, Secret};
use pubsub_testkit::brokers::NatsServer;

fn config(server: &NatsServer) -> Config {
    let mut c = Config::default();
    c.backend = "nats".into();
    c.connect_timeout = Duration::from_secs(5);
    c.section_mut::<NatsConfig>().unwrap().servers = vec![server.url()];
    c
}

/// Connect, subscribe, publish, receive one message.
async fn round_trip(config: &Config) -> pubsub_nats::Result<()> {
    let ps = pubsub_nats::connect(config).await?;
    ps.subscribe("auth.check").await?;
    ps.publish("auth.check", "ok").await?;
    let m = ps
        .recv_timeout(Duration::from_secs(10))
        .await?
        .expect("the message comes back");
    assert_eq!(&m.payload[..], b"ok");
    ps.close().await
}

/// A connect that must fail with `Auth` within two seconds, without the secret in the message.
async fn refused(config: &Config, secret: &str) {
    let t0 = Instant::now();
    let e = pubsub_nats::connect(config)
        .await
        .expect_err("wrong credentials are refused");
    assert_eq!(e.kind(), ErrorKind::Auth, "{e}");
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains(secret), "secret leaked: {shown}");
}

fn start(extra: &str) -> NatsServer {
    tokio::task::block_in_place(|| NatsServer::builder().config(extra).start())
}

#[tokio::test(flavor = "multi_thread")]
async fn user_and_password() {
    let server = start("authorization { user: alice, password: \"right-pw-1\" }");
    let mut c = config(&server);
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.user = Some("alice".into());
    nats.password = Some(Secret::new("right-pw-1"));
    round_trip(&c).await.expect("right password");
    c.section_mut::<NatsConfig>().unwrap().password = Some(Secret::new("wrong-pw-1"));
    refused(&c, "wrong-pw-1").await;
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.user = None;
    nats.password = None;
    refused(&c, "right-pw-1").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token() {
    let server = start("authorization { token: \"right-token-2\" }");
    let mut c = config(&server);
    c.section_mut::<NatsConfig>().unwrap().token = Some(Secret::new("right-token-2"));
    round_trip(&c).await.expect("right token");
    c.section_mut::<NatsConfig>().unwrap().token = Some(Secret::new("wrong-token-2"));
    refused(&c, "wrong-token-2").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nkey() {
    let user = KeyPair::new_user();
    let server = start(&format!(
        "authorization {{ users: [ {{ nkey: {} }} ] }}",
        user.public_key()
    ));
    let mut c = config(&server);
    c.section_mut::<NatsConfig>().unwrap().nkeys_seed = Some(Secret::new(user.seed().unwrap()));
    round_trip(&c).await.expect("right nkey");
    let other = KeyPair::new_user();
    let other_seed = other.seed().unwrap();
    c.section_mut::<NatsConfig>().unwrap().nkeys_seed = Some(Secret::new(other_seed.clone()));
    refused(&c, &other_seed).await;
    // Not a seed at all: a config error that does not echo the value.
    c.section_mut::<NatsConfig>().unwrap().nkeys_seed = Some(Secret::new("SUnot-a-seed-marker"));
    let e = pubsub_nats::connect(&c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(e.to_string().contains("nats.nkeys_seed"), "{e}");
    assert!(!e.to_string().contains("not-a-seed-marker"), "{e}");
}

fn jwt(claims: serde_json::Value, signer: &KeyPair) -> String {
    let header = BASE64URL_NOPAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = BASE64URL_NOPAD.encode(claims.to_string().as_bytes());
    let sig = signer.sign(format!("{header}.{body}").as_bytes()).unwrap();
    format!("{header}.{body}.{}", BASE64URL_NOPAD.encode(&sig))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An operator, one account preloaded in the server, and a way to issue users.
struct Operator {
    server: NatsServer,
    account: KeyPair,
}

impl Operator {
    fn start() -> Operator {
        let operator = KeyPair::new_operator();
        let account = KeyPair::new_account();
        let op_jwt = jwt(
            serde_json::json!({
                "jti": format!("op{}", now()), "iat": now(), "iss": operator.public_key(),
                "name": "test-operator", "sub": operator.public_key(),
                "nats": {"type": "operator", "version": 2}
            }),
            &operator,
        );
        let acc_jwt = Self::account_jwt(&account, &operator);
        let server = start(&format!(
            "operator: {op_jwt}\nresolver: MEMORY\nresolver_preload: {{ {}: {acc_jwt} }}\n",
            account.public_key()
        ));
        Operator { server, account }
    }

    fn account_jwt(account: &KeyPair, operator: &KeyPair) -> String {
        jwt(
            serde_json::json!({
                "jti": format!("acc{}", now()), "iat": now(), "iss": operator.public_key(),
                "name": "test-account", "sub": account.public_key(),
                "nats": {
                    "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1,
                               "exports": -1, "wildcards": true, "conn": -1, "leaf": -1},
                    "default_permissions": {"pub": {}, "sub": {}},
                    "type": "account", "version": 2
                }
            }),
            operator,
        )
    }

    /// A new user key and its JWT signed by `account`.
    fn user(account: &KeyPair) -> (KeyPair, String) {
        let user = KeyPair::new_user();
        let token = jwt(
            serde_json::json!({
                "jti": format!("usr{}", now()), "iat": now(), "iss": account.public_key(),
                "name": "test-user", "sub": user.public_key(),
                "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                         "type": "user", "version": 2}
            }),
            account,
        );
        (user, token)
    }
}

fn creds(jwt: &str, seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\n\
         -----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn user_jwt_signed_with_nkey_seed() {
    let op = Operator::start();
    let (user, token) = Operator::user(&op.account);
    let mut c = config(&op.server);
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.user_jwt = Some(Secret::new(token.clone()));
    nats.nkeys_seed = Some(Secret::new(user.seed().unwrap()));
    round_trip(&c).await.expect("valid user JWT");

    // The right JWT with a seed that is not the user's: the signature fails.
    let impostor = KeyPair::new_user();
    c.section_mut::<NatsConfig>().unwrap().nkeys_seed = Some(Secret::new(impostor.seed().unwrap()));
    refused(&c, &impostor.seed().unwrap()).await;

    // A user of an account the server does not know.
    let stranger = KeyPair::new_account();
    let (user2, token2) = Operator::user(&stranger);
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.user_jwt = Some(Secret::new(token2.clone()));
    nats.nkeys_seed = Some(Secret::new(user2.seed().unwrap()));
    refused(&c, &token2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn creds_file() {
    let op = Operator::start();
    let dir = tempfile::tempdir().unwrap();
    let (user, token) = Operator::user(&op.account);
    let good = dir.path().join("good.creds");
    std::fs::write(&good, creds(&token, &user.seed().unwrap())).unwrap();
    let mut c = config(&op.server);
    c.section_mut::<NatsConfig>().unwrap().user_credentials = Some(good);
    round_trip(&c).await.expect("valid .creds");

    let stranger = KeyPair::new_account();
    let (user2, token2) = Operator::user(&stranger);
    let bad = dir.path().join("bad.creds");
    std::fs::write(&bad, creds(&token2, &user2.seed().unwrap())).unwrap();
    c.section_mut::<NatsConfig>().unwrap().user_credentials = Some(bad);
    refused(&c, &user2.seed().unwrap()).await;

    let garbage = dir.path().join("garbage.creds");
    std::fs::write(&garbage, "not a creds file: secret-garbage-marker").unwrap();
    c.section_mut::<NatsConfig>().unwrap().user_credentials = Some(garbage);
    let e = pubsub_nats::connect(&c).await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::InvalidConfig | ErrorKind::Auth),
        "{e}"
    );
    assert!(
        !format!("{e} {e:?}").contains("secret-garbage-marker"),
        "{e}"
    );

    c.section_mut::<NatsConfig>().unwrap().user_credentials =
        Some(dir.path().join("missing.creds"));
    let e = pubsub_nats::connect(&c).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidConfig, "{e}");
    assert!(
        e.to_string().contains("nats.user_credentials") && e.to_string().contains("missing.creds"),
        "{e}"
    );
}

/// Each secret set to a unique marker; connect successfully and
/// unsuccessfully with every method; no marker may appear in any log line
/// (all levels, the client library's included), error, or `Debug` output.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_never_reach_logs_errors_or_debug() {
    pubsub_testkit::logs::capture();
    let mut shown = String::new();
    let mut markers: Vec<String> = Vec::new();
    let mut record = |c: &Config, r: pubsub_nats::Result<()>| {
        shown.push_str(&format!("{c:?}\n{}\n", serde_json::to_string(c).unwrap()));
        if let Err(e) = r {
            shown.push_str(&format!("{e}\n{e:?}\n"));
        }
    };

    let server = start("authorization { user: alice, password: \"pw-marker-7c1e\" }");
    let mut c = config(&server);
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.user = Some("alice".into());
    nats.password = Some(Secret::new("pw-marker-7c1e"));
    record(&c, round_trip(&c).await);
    c.section_mut::<NatsConfig>().unwrap().password = Some(Secret::new("pw-marker-wrong-41b2"));
    record(&c, round_trip(&c).await);
    c.section_mut::<NatsConfig>().unwrap().servers = vec![format!(
        "nats://alice:pw-marker-7c1e@127.0.0.1:{}",
        server.port()
    )];
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.user = None;
    nats.password = None;
    let r = round_trip(&c).await;
    assert!(r.is_ok(), "credentials in the URL: {r:?}");
    record(&c, r);
    c.section_mut::<NatsConfig>().unwrap().servers = vec![format!(
        "nats://alice:pw-marker-url-5d0c@127.0.0.1:{}",
        server.port()
    )];
    record(&c, round_trip(&c).await);
    markers.extend(
        [
            "pw-marker-7c1e",
            "pw-marker-wrong-41b2",
            "pw-marker-url-5d0c",
        ]
        .map(String::from),
    );

    let server = start("authorization { token: \"tok-marker-93ad\" }");
    let mut c = config(&server);
    c.section_mut::<NatsConfig>().unwrap().token = Some(Secret::new("tok-marker-93ad"));
    record(&c, round_trip(&c).await);
    c.section_mut::<NatsConfig>().unwrap().token = Some(Secret::new("tok-marker-wrong-18f0"));
    record(&c, round_trip(&c).await);
    markers.extend(["tok-marker-93ad", "tok-marker-wrong-18f0"].map(String::from));

    let op = Operator::start();
    let (user, token) = Operator::user(&op.account);
    let seed = user.seed().unwrap();
    let mut c = config(&op.server);
    let nats = c.section_mut::<NatsConfig>().unwrap();
    nats.user_jwt = Some(Secret::new(token.clone()));
    nats.nkeys_seed = Some(Secret::new(seed.clone()));
    record(&c, round_trip(&c).await);
    let impostor = KeyPair::new_user().seed().unwrap();
    c.section_mut::<NatsConfig>().unwrap().nkeys_seed = Some(Secret::new(impostor.clone()));
    record(&c, round_trip(&c).await);
    let dir = tempfile::tempdir().unwrap();
    let creds_path = dir.path().join("u.creds");
    std::fs::write(&creds_path, creds(&token, &seed)).unwrap();
    let mut c = config(&op.server);
    c.section_mut::<NatsConfig>().unwrap().user_credentials = Some(creds_path);
    record(&c, round_trip(&c).await);
    // The JWT's signature part and the seeds are the secret parts.
    markers.extend([
        seed,
        impostor,
        token.rsplit('.').next().unwrap().to_string(),
    ]);

    let logs = pubsub_testkit::logs::captured();
    assert!(!logs.is_empty(), "logs were captured");
    for m in &markers {
        let leak: Vec<&str> = logs
            .lines()
            .filter(|l| l.contains(m.as_str()))
            .take(3)
            .collect();
        assert!(leak.is_empty(), "secret {m:?} in the logs: {leak:#?}");
        assert!(
            !shown.contains(m.as_str()),
            "secret {m:?} in an error or Debug output:\n{shown}"
        );
    }
    println!(
        "checked {} markers against {} bytes of logs and {} bytes of errors/Debug",
        markers.len(),
        logs.len(),
        shown.len()
    );
}
