//! Loopback tests of the batch receive and send: metadata per datagram, long datagrams, GSO.

use super::*;
use std::os::fd::AsFd;

#[test]
fn batch_receive_and_reply_keep_per_datagram_metadata() {
    let server = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    enable_pktinfo(server.as_fd(), false).expect("pktinfo");
    enable_rx_timestamps(server.as_fd()).expect("timestamps");
    let port = server.local_addr().expect("addr").port();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .expect("timeout");
    // Three datagrams to two different local addresses.
    for (i, to) in [[127, 0, 0, 1], [127, 0, 0, 2], [127, 0, 0, 1]]
        .iter()
        .enumerate()
    {
        let payload = vec![u8::try_from(i).unwrap_or(0); 10 + i];
        client
            .send_to(&payload, SocketAddr::from((*to, port)))
            .expect("send");
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut rx = RecvBatch::new();
    let n = rx.recv(server.as_fd(), BATCH).expect("recvmmsg");
    assert_eq!(n, 3);
    let mut replies = Vec::new();
    for i in 0..n {
        let (meta, data) = rx.get(i).expect("datagram");
        assert_eq!(data.len(), 10 + i);
        assert!(meta.rx_time.is_some());
        assert_eq!(meta.peer, client.local_addr().expect("addr"));
        replies.push((data.to_vec(), meta));
    }
    assert_eq!(replies[1].1.local, Some(IpAddr::from([127, 0, 0, 2])));
    assert!(rx.get(3).is_none());
    assert!(
        matches!(rx.recv(server.as_fd(), BATCH), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    );
    let mut tx = SendBatch::new();
    let items = replies.iter().map(|(d, m)| Outgoing {
        payload: d,
        dst: m.peer,
        src: m.local,
        ifindex: m.ifindex,
    });
    tx.send(server.as_fd(), items, |i, e| panic!("send {i}: {e}"));
    let mut buf = [0u8; 64];
    for i in 0..3 {
        let (len, from) = client.recv_from(&mut buf).expect("reply");
        assert_eq!(len, 10 + i);
        let want = if i == 1 {
            [127, 0, 0, 2]
        } else {
            [127, 0, 0, 1]
        };
        assert_eq!(
            from,
            SocketAddr::from((want, port)),
            "reply from the address queried"
        );
    }
    // A second batch reuses the headers: lengths and addresses must be fresh.
    let other = std::net::UdpSocket::bind("127.0.0.3:0").expect("bind");
    other
        .send_to(&[7; 100], SocketAddr::from(([127, 0, 0, 2], port)))
        .expect("send");
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(rx.recv(server.as_fd(), BATCH).expect("recvmmsg"), 1);
    let (meta, data) = rx.get(0).expect("datagram");
    assert_eq!(data, &[7; 100][..]);
    assert_eq!(meta.peer, other.local_addr().expect("addr"));
    assert_eq!(meta.local, Some(IpAddr::from([127, 0, 0, 2])));
    assert!(!meta.truncated);
}

#[test]
fn long_datagrams_arrive_whole_between_short_ones() {
    for plain in [false, true] {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let to = server.local_addr().expect("addr");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let lens = [10usize, 2_048, 9_000, 65_507, 48];
        let payloads: Vec<Vec<u8>> = lens
            .iter()
            .enumerate()
            .map(|(k, &len)| (0..len).map(|j| ((j * 7 + k) % 251) as u8).collect())
            .collect();
        for p in &payloads {
            client.send_to(p, to).expect("send");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut rx = RecvBatch::new();
        let n = if plain {
            rx.recv_plain(server.as_fd(), BATCH).expect("recvfrom")
        } else {
            rx.recv(server.as_fd(), BATCH).expect("recvmmsg")
        };
        assert_eq!(n, lens.len(), "plain: {plain}");
        for (i, want) in payloads.iter().enumerate() {
            let (meta, data) = rx.get(i).expect("datagram");
            assert!(!meta.truncated, "datagram {i}");
            assert_eq!(meta.peer, client.local_addr().expect("addr"));
            assert_eq!(data, &want[..], "datagram {i} ({} bytes)", want.len());
        }
        let empty = if plain {
            rx.recv_plain(server.as_fd(), BATCH)
        } else {
            rx.recv(server.as_fd(), BATCH)
        };
        assert!(matches!(empty, Err(e) if e.kind() == io::ErrorKind::WouldBlock));
    }
}

#[test]
fn equal_replies_to_one_peer_arrive_as_separate_datagrams() {
    let server = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    let port = server.local_addr().expect("addr").port();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .expect("timeout");
    let peer = client.local_addr().expect("addr");
    // Equal-length replies from two source addresses, interleaved, one of another length
    // and one too long for a segment. The source changes towards the one peer keep them in
    // separate messages (order per peer), so this checks sources and lengths, and
    // `segmented_sends_arrive_whole_and_in_order` the GSO sends.
    let srcs = [1u8, 2, 1, 2, 1, 1, 2, 1, 1];
    let lens = [48usize, 48, 48, 48, 20, 48, 48, 48, 3000];
    let payloads: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| vec![u8::try_from(i).unwrap_or(0); len])
        .collect();
    let items = payloads.iter().zip(srcs).map(|(p, s)| Outgoing {
        payload: p,
        dst: peer,
        src: Some(IpAddr::from([127, 0, 0, s])),
        ifindex: 0,
    });
    SendBatch::new().send(server.as_fd(), items, |i, e| panic!("send {i}: {e}"));
    let mut got: Vec<(u8, usize, u8)> = Vec::new();
    let mut buf = [0u8; 4096];
    for _ in 0..lens.len() {
        let (len, from) = client.recv_from(&mut buf).expect("reply");
        let SocketAddr::V4(from) = from else {
            panic!("v4 expected")
        };
        assert_eq!(from.port(), port);
        assert!(
            buf[..len].iter().all(|&b| b == buf[0]),
            "one reply per datagram"
        );
        got.push((from.ip().octets()[3], len, buf[0]));
    }
    got.sort_by_key(|g| g.2);
    let want: Vec<(u8, usize, u8)> = (0..lens.len())
        .map(|i| (srcs[i], lens[i], u8::try_from(i).unwrap_or(0)))
        .collect();
    assert_eq!(got, want, "each reply whole, from its own source address");
}

#[test]
fn segmented_sends_arrive_whole_and_in_order() {
    let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .expect("timeout");
    let peer = client.local_addr().expect("addr");
    // Sends of 48-byte segments ending in a shorter one, of 48, of 100, and one too long to
    // be a segment.
    let lens = [48usize, 48, 48, 20, 48, 48, 100, 100, 3000];
    let payloads: Vec<Vec<u8>> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| vec![u8::try_from(i).unwrap_or(0); len])
        .collect();
    let items = payloads.iter().map(|p| Outgoing {
        payload: p,
        dst: peer,
        src: Some(IpAddr::from([127, 0, 0, 1])),
        ifindex: 0,
    });
    SendBatch::new().send(server.as_fd(), items, |i, e| panic!("send {i}: {e}"));
    let mut buf = [0u8; 4096];
    for (i, &want) in lens.iter().enumerate() {
        let (len, from) = client.recv_from(&mut buf).expect("reply");
        assert_eq!(from, server.local_addr().expect("addr"));
        assert_eq!(
            (len, buf[0]),
            (want, u8::try_from(i).unwrap_or(0)),
            "datagram {i}"
        );
        assert!(
            buf[..len].iter().all(|&b| b == buf[0]),
            "one reply per datagram"
        );
    }
}

#[test]
fn receive_takes_no_more_than_asked_and_the_kernel_counts_what_it_drops() {
    let server = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = server.local_addr().expect("addr");
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    assert_eq!(drops(server.as_fd()).expect("meminfo"), 0);
    for _ in 0..5 {
        client.send_to(b"hello", addr).expect("send");
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut rx = RecvBatch::new();
    assert_eq!(rx.recv(server.as_fd(), 2).expect("recvmmsg"), 2);
    assert_eq!(rx.recv_plain(server.as_fd(), 2).expect("recvfrom"), 2);
    assert_eq!(rx.recv(server.as_fd(), BATCH).expect("recvmmsg"), 1);
    // Overflow the receive queue: the kernel drops and counts.
    let payload = vec![0u8; 60_000];
    for _ in 0..200 {
        let _ = client.send_to(&payload, addr);
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(drops(server.as_fd()).expect("meminfo") > 0);
}

#[test]
fn a_single_reply_leaves_from_the_address_queried_and_errors_name_it() {
    let server = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
    let port = server.local_addr().expect("addr").port();
    let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    client
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .expect("timeout");
    let mut tx = SendBatch::new();
    let one = Outgoing {
        payload: b"only",
        dst: client.local_addr().expect("addr"),
        src: Some(IpAddr::from([127, 0, 0, 4])),
        ifindex: 0,
    };
    tx.send(server.as_fd(), [one], |i, e| panic!("send {i}: {e}"));
    let mut buf = [0u8; 16];
    let (len, from) = client.recv_from(&mut buf).expect("reply");
    assert_eq!(&buf[..len], b"only");
    assert_eq!(from, SocketAddr::from(([127, 0, 0, 4], port)));
    // Port 0 is not a destination: the one reply's error is reported with its index.
    let bad = Outgoing {
        dst: SocketAddr::from(([127, 0, 0, 1], 0)),
        ..one
    };
    let mut failed = Vec::new();
    tx.send(server.as_fd(), [bad], |i, _| failed.push(i));
    assert_eq!(failed, [0]);
}
