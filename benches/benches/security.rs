//! What securing the wire costs: TLS (rustls on ring, the stack of both the REST listener and tonic)
//! per handshake and per record, and gRPC call signing (`TrestleSharedKey`) on either end.
//!
//! - `tls/handshake`: one full TLS 1.3 handshake (X25519, the ECDSA P-256 certificate `trestle dev --tls`
//!   makes, verified against it), both ends in memory, no resumption: what a connection pays once and
//!   keep-alive amortises.
//! - `tls/record_*`: the steady state: plaintext written on one end, sealed into records, opened and read
//!   on the other (AES-256-GCM under TLS 1.3's default suite order on hardware with AES instructions).
//! - `grpc_signing/sign_*`: what the SDK adds to a call: the message encoded once more, SHA-256 of it,
//!   HMAC-SHA256 over the string to sign, two metadata entries. `verify_*`: what the node does before it
//!   serves the call (`grpc_auth`): the date parsed, the message encoded and hashed, the HMAC recomputed
//!   and compared.

mod common;

use std::hint::black_box;
use std::io::{Read as _, Write as _};
use std::sync::Arc;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};
use trestle_proto::{auth, table as pb};

fn configs() -> (Arc<ClientConfig>, Arc<ServerConfig>) {
    let names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let c = rcgen::generate_simple_self_signed(names).expect("a certificate");
    let cert: CertificateDer<'static> = c.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(c.signing_key.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("certificate and key");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).expect("a trust anchor");
    let mut client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.resumption = rustls::client::Resumption::disabled();
    (Arc::new(client), Arc::new(server))
}

/// Moves every pending TLS byte from `from` to `to` and lets `to` process it.
fn pump(from: &mut Connection, to: &mut Connection, wire: &mut Vec<u8>) {
    wire.clear();
    while from.wants_write() {
        from.write_tls(wire).expect("write to memory");
    }
    let mut rd = &wire[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).expect("read from memory");
        to.process_new_packets().expect("valid records");
    }
}

fn connect(client: &Arc<ClientConfig>, server: &Arc<ServerConfig>) -> (Connection, Connection) {
    let name = ServerName::try_from("127.0.0.1").expect("an IP address");
    let mut c: Connection = ClientConnection::new(client.clone(), name)
        .expect("client")
        .into();
    let mut s: Connection = ServerConnection::new(server.clone())
        .expect("server")
        .into();
    let mut wire = Vec::new();
    while c.is_handshaking() || s.is_handshaking() {
        pump(&mut c, &mut s, &mut wire);
        pump(&mut s, &mut c, &mut wire);
    }
    // TLS 1.3 servers send their session tickets after the handshake.
    pump(&mut s, &mut c, &mut wire);
    (c, s)
}

fn tls(c: &mut Criterion) {
    let (client, server) = configs();
    let mut g = c.benchmark_group("tls");
    g.bench_function("handshake", |b| b.iter(|| connect(&client, &server)));
    let (mut tx, mut rx) = connect(&client, &server);
    let mut wire = Vec::with_capacity(32 * 1024);
    let mut out = vec![0u8; 16 * 1024];
    for size in [1024usize, 8 * 1024] {
        let plaintext = vec![b'x'; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("record_{}k", size / 1024), |b| {
            b.iter(|| {
                tx.writer()
                    .write_all(black_box(&plaintext))
                    .expect("buffer");
                pump(&mut tx, &mut rx, &mut wire);
                let mut got = 0;
                while got < size {
                    got += rx.reader().read(&mut out).expect("plaintext");
                }
                got
            })
        });
    }
    g.finish();
}

fn get_request() -> pb::GetRequest {
    pb::GetRequest {
        account: "devstoreaccount1".into(),
        table: "benchread".into(),
        partition_key: "p00001".into(),
        row_key: "r000000000001".into(),
        select: Vec::new(),
    }
}

fn insert_request() -> pb::WriteRequest {
    let entity = common::entity("p00001", "r000000000001");
    pb::WriteRequest {
        account: "devstoreaccount1".into(),
        table: "benchinsert".into(),
        op: Some(pb::WriteOp {
            kind: pb::WriteKind::Insert as i32,
            entity: Some(pb::Entity::from(&entity)),
            if_match: None,
        }),
        fencing: None,
    }
}

/// The node's side of a signed call (`grpc_auth::authenticate_signed`, without the account lookup).
fn verify<T: prost::Message>(req: &tonic::Request<T>, method: &str, keys: &[Vec<u8>]) -> bool {
    let md = req.metadata();
    let Some(header) = md.get(auth::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(date) = md.get(auth::DATE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((_, signature)) = header.split_once(':') else {
        return false;
    };
    if chrono::DateTime::parse_from_rfc2822(date).is_err() {
        return false;
    }
    let message = req.get_ref().encode_to_vec();
    let string =
        trestle_types::signing::grpc_string_to_sign(method, "devstoreaccount1", date, &message);
    trestle_types::signing::verify(keys, &[string], signature)
}

fn grpc_signing(c: &mut Criterion) {
    let key = base64_decode(trestle_benches::signing::DEV_ACCOUNT_KEY);
    let keys = vec![key.clone()];
    let date = auth::http_date(chrono::Utc::now());
    let account = "devstoreaccount1";
    let mut g = c.benchmark_group("grpc_signing");
    let get = get_request();
    let insert = insert_request();
    g.bench_function("sign_get", |b| {
        b.iter(|| {
            let mut r = tonic::Request::new(black_box(get.clone()));
            auth::sign_request(&mut r, auth::method::GET, account, &key, &date);
            r
        })
    });
    g.bench_function("sign_insert_1k", |b| {
        b.iter(|| {
            let mut r = tonic::Request::new(black_box(insert.clone()));
            auth::sign_request(&mut r, auth::method::WRITE, account, &key, &date);
            r
        })
    });
    // The clone alone, to subtract from the two above.
    g.bench_function("clone_insert_1k", |b| {
        b.iter(|| tonic::Request::new(black_box(insert.clone())))
    });
    let mut signed_get = tonic::Request::new(get.clone());
    auth::sign_request(&mut signed_get, auth::method::GET, account, &key, &date);
    let mut signed_insert = tonic::Request::new(insert.clone());
    auth::sign_request(
        &mut signed_insert,
        auth::method::WRITE,
        account,
        &key,
        &date,
    );
    assert!(verify(&signed_get, auth::method::GET, &keys));
    assert!(verify(&signed_insert, auth::method::WRITE, &keys));
    g.bench_function("verify_get", |b| {
        b.iter(|| verify(black_box(&signed_get), auth::method::GET, &keys))
    });
    g.bench_function("verify_insert_1k", |b| {
        b.iter(|| verify(black_box(&signed_insert), auth::method::WRITE, &keys))
    });
    g.finish();
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("valid base64")
}

criterion_group! {
    name = benches;
    config = common::quick();
    targets = tls, grpc_signing
}
criterion_main!(benches);
