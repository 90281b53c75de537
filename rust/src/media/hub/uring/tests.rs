//! The io_uring backend against real sockets: multishot receives with their arrival times, and
//! the send slots' reuse.

use super::*;
use crate::media::recv::enable_receive_timestamps;

/// A ring with no wake eventfd in use (the tests never arm it).
fn ring() -> Option<Uring> {
    match Uring::open("127.0.0.1".parse().unwrap(), -1) {
        Ok(uring) => Some(uring),
        Err(refused) => {
            eprintln!("skipped, io_uring refused here: {refused}");
            None
        }
    }
}

#[test]
fn multishot_recvmsg_delivers_each_datagram_with_its_source_and_kernel_arrival_time() {
    let Some(mut uring) = ring() else { return };
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_nonblocking(true).unwrap();
    enable_receive_timestamps(receiver.as_raw_fd()).unwrap();
    let entry = uring.recv_entry(receiver.as_raw_fd(), 5);
    uring.push(&entry);
    uring.ring.submit().unwrap();
    // The kernel turns stamping on in deferred work after the first socket asks; until then it
    // stamps at read time. So a few rounds (as recv.rs's test), of which one must be stamped on
    // arrival; every round must deliver each datagram with its source.
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut late = Vec::new();
    for _ in 0..10 {
        let sent_at = SystemTime::now();
        for i in 0..3u8 {
            sender.send_to(&[i; 7], receiver.local_addr().unwrap()).unwrap();
        }
        let sent_by = SystemTime::now();
        std::thread::sleep(Duration::from_millis(30)); // the worker reading late, as after a nap
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < 3 && Instant::now() < deadline {
            uring.wait(Duration::from_millis(50));
            let read_at = SystemTime::now();
            let Uring { ring, buffers, template, .. } = &mut uring;
            for cqe in ring.completion() {
                assert_eq!(cqe.user_data(), 5);
                assert!(cqueue::more(cqe.flags()), "the receive stays armed");
                let bid = cqueue::buffer_select(cqe.flags()).expect("a provided buffer");
                let length = usize::try_from(cqe.result()).expect("a datagram, not an error");
                let out = types::RecvMsgOut::parse(&buffers.buffer(bid)[..length], template).unwrap();
                let stamp = control_timestamp(out.control_data()).expect("SO_TIMESTAMPNS in the control data");
                let stamp = SystemTime::UNIX_EPOCH + stamp;
                got.push((out.payload_data().to_vec(), socket_addr_from_bytes(out.name_data()), stamp, read_at));
                buffers.push(bid);
            }
            buffers.publish();
        }
        assert_eq!(got.len(), 3);
        for (i, (payload, source, _, _)) in got.iter().enumerate() {
            assert_eq!(*payload, vec![i as u8; 7]);
            assert_eq!(*source, Some(sender.local_addr().unwrap()));
        }
        // Stamped on arrival, not when read 30 ms later.
        let on_arrival = |&(_, _, stamp, read_at): &(Vec<u8>, Option<std::net::SocketAddr>, SystemTime, SystemTime)| {
            stamp + Duration::from_millis(1) >= sent_at
                && stamp <= sent_by + Duration::from_millis(10)
                && read_at.duration_since(stamp).is_ok_and(|waited| waited >= Duration::from_millis(20))
        };
        if got.iter().all(on_arrival) {
            uring.drain();
            return;
        }
        late.push(got.iter().map(|g| g.2.duration_since(sent_by).unwrap_or_default()).collect::<Vec<_>>());
    }
    panic!("no round was stamped on arrival; stamps after the sends: {late:?}");
}

#[test]
fn a_datagram_longer_than_a_provided_buffer_reads_as_truncated() {
    let Some(mut uring) = ring() else { return };
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_nonblocking(true).unwrap();
    let entry = uring.recv_entry(receiver.as_raw_fd(), 5);
    uring.push(&entry);
    uring.ring.submit().unwrap();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    sender.send_to(&[7; BUFFER_BYTES + 100], receiver.local_addr().unwrap()).unwrap();
    sender.send_to(&[8; 100], receiver.local_addr().unwrap()).unwrap();
    let mut truncated = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(2);
    while truncated.len() < 2 && Instant::now() < deadline {
        uring.wait(Duration::from_millis(50));
        let Uring { ring, buffers, template, .. } = &mut uring;
        for cqe in ring.completion() {
            let bid = cqueue::buffer_select(cqe.flags()).expect("a provided buffer");
            let length = usize::try_from(cqe.result()).expect("a datagram, not an error");
            let out = types::RecvMsgOut::parse(&buffers.buffer(bid)[..length], template).unwrap();
            truncated.push(out.is_payload_truncated());
            buffers.push(bid);
        }
        buffers.publish();
    }
    assert_eq!(truncated, vec![true, false]);
    uring.drain();
}

#[test]
fn a_batch_of_sends_goes_out_in_one_submission_and_every_slot_comes_back() {
    let Some(mut uring) = ring() else { return };
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    for i in 0..4u8 {
        let datagram = Datagram {
            source: sender.local_addr().unwrap(),
            destination: receiver.local_addr().unwrap(),
            contents: vec![i; 3],
        };
        let entry = uring.sends.prepare(sender.as_raw_fd(), datagram);
        uring.push(&entry);
    }
    uring.ring.submit().unwrap();
    for i in 0..4u8 {
        let mut buffer = [0u8; 8];
        let (length, from) = receiver.recv_from(&mut buffer).unwrap();
        assert_eq!((&buffer[..length], from), (&[i; 3][..], sender.local_addr().unwrap()));
    }
    let mut completed = 0;
    while completed < 4 {
        uring.wait(Duration::from_millis(50));
        for cqe in uring.ring.completion() {
            assert_eq!(cqe.result(), 3);
            uring.sends.complete(send_index(cqe.user_data()).unwrap());
            completed += 1;
        }
    }
    assert_eq!(uring.sends.free.len(), 4);
}
