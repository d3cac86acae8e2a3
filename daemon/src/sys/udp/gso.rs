//! Which replies of a batch leave together as one UDP GSO send (`UDP_SEGMENT`): the decision
//! alone, with no socket and no unsafe code, so it can be tested on its own.
//!
//! A GSO send is one message whose payload the kernel cuts into datagrams of one segment size,
//! the last one possibly shorter. The peer still receives separate datagrams, but the stack
//! routes, builds and delivers them as one packet until the segmentation, which is most of the
//! per-datagram send cost. So replies may share a send when they go to the same peer from the
//! same source address and interface, are no longer than the first of them (a shorter one ends
//! the send), and the send stays within the kernel's limits. Replies towards one peer keep
//! their order: a reply only joins the send holding the previous reply to its peer.
#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};

/// Largest reply sent as a GSO segment. A segment plus headers must fit the route's MTU or the
/// kernel refuses the whole send (`EINVAL`); this fits a 1280-byte IPv6 minimum MTU. Larger
/// replies go one per message and may be fragmented.
pub(crate) const GSO_MAX_SEGMENT: usize = 1232;

/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
pub(crate) const GSO_MAX_SEGMENTS: usize = 64;

/// Most bytes in one GSO send: the payload of one UDP datagram (IPv4, no options), which the
/// kernel requires of the unsegmented send.
const GSO_MAX_BYTES: usize = 65_507;

/// How a datagram leaves: replies may share a GSO send only if all of this is equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    /// Destination.
    pub(crate) dst: SocketAddr,
    /// Source address (pktinfo), if any.
    pub(crate) src: Option<IpAddr>,
    /// Interface pinned for IPv6 link-local peers.
    pub(crate) ifindex: u32,
}

/// One message of a batch send: items `order[start..start + count]` of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendGroup {
    /// Where its items start in [`SendPlan::items`].
    start: usize,
    /// How many items.
    count: usize,
    /// Length of its first item: the segment size when it is a GSO send.
    first_len: usize,
}

impl SendGroup {
    /// The `UDP_SEGMENT` size to send this group with: `None` for a single datagram.
    pub(crate) fn segment(&self) -> Option<u16> {
        if self.count > 1 {
            u16::try_from(self.first_len).ok()
        } else {
            None
        }
    }
}

/// A group while it is being filled.
#[derive(Debug, Clone, Copy)]
struct Open {
    route: Route,
    first_len: usize,
    count: usize,
    bytes: usize,
    /// Still accepts items (its first item could be a segment, and no shorter item ended it).
    open: bool,
}

/// The sends of up to `N` datagrams: which go together and in what order. Built on the stack
/// for each batch; nothing allocates.
#[derive(Debug)]
pub(crate) struct SendPlan<const N: usize> {
    /// Item indices (positions in the planned sequence), grouped by send, groups in the order
    /// of their first item.
    order: [usize; N],
    groups: [SendGroup; N],
    n_items: usize,
    n_groups: usize,
}

impl<const N: usize> SendPlan<N> {
    /// Plans the sends of the first `N` of `items` (each its payload length and route).
    /// `gso`: the kernel segments UDP sends; without it every datagram is its own message.
    pub(crate) fn new(items: impl IntoIterator<Item = (usize, Route)>, gso: bool) -> Self {
        let empty = SendGroup {
            start: 0,
            count: 0,
            first_len: 0,
        };
        let mut plan = Self {
            order: [0; N],
            groups: [empty; N],
            n_items: 0,
            n_groups: 0,
        };
        let mut group_of = [0usize; N];
        let mut building: [Option<Open>; N] = [None; N];
        for (i, (len, route)) in items.into_iter().take(N).enumerate() {
            let segmentable = gso && (1..=GSO_MAX_SEGMENT).contains(&len);
            // The send holding the previous item to this peer: the only one it may join.
            let last = building[..plan.n_groups]
                .iter()
                .rposition(|g| g.is_some_and(|g| g.route.dst == route.dst));
            let joined = last.filter(|&g| {
                building[g].is_some_and(|g| {
                    segmentable
                        && g.open
                        && g.route == route
                        && len <= g.first_len
                        && g.count < GSO_MAX_SEGMENTS
                        && g.bytes + len <= GSO_MAX_BYTES
                })
            });
            let g = match joined {
                Some(g) => {
                    if let Some(open) = &mut building[g] {
                        open.count += 1;
                        open.bytes += len;
                        // A shorter datagram can only be the last segment.
                        open.open = len == open.first_len;
                    }
                    g
                }
                None => {
                    let g = plan.n_groups;
                    building[g] = Some(Open {
                        route,
                        first_len: len,
                        count: 1,
                        bytes: len,
                        open: segmentable,
                    });
                    plan.n_groups += 1;
                    g
                }
            };
            group_of[i] = g;
            plan.n_items = i + 1;
        }
        // Lay the groups out one after the other, items in their original order within each.
        let mut start = 0;
        for (g, open) in building[..plan.n_groups].iter().enumerate() {
            let (count, first_len) = open.map_or((0, 0), |o| (o.count, o.first_len));
            plan.groups[g] = SendGroup {
                start,
                count: 0,
                first_len,
            };
            start += count;
        }
        for (i, &g) in group_of[..plan.n_items].iter().enumerate() {
            let group = &mut plan.groups[g];
            plan.order[group.start + group.count] = i;
            group.count += 1;
        }
        plan
    }

    /// The messages to send, in order.
    pub(crate) fn groups(&self) -> &[SendGroup] {
        &self.groups[..self.n_groups]
    }

    /// The indices of the items `group` sends, in their original order.
    pub(crate) fn items(&self, group: &SendGroup) -> &[usize] {
        &self.order[group.start..group.start + group.count]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(port: u16, src: u8) -> Route {
        Route {
            dst: SocketAddr::from(([127, 0, 0, 1], port)),
            src: Some(IpAddr::from([127, 0, 0, src])),
            ifindex: 0,
        }
    }

    /// Each group as (its item indices, its segment size).
    fn plan<const N: usize>(items: &[(usize, Route)], gso: bool) -> Vec<(Vec<usize>, Option<u16>)> {
        let p = SendPlan::<N>::new(items.iter().copied(), gso);
        p.groups()
            .iter()
            .map(|g| (p.items(g).to_vec(), g.segment()))
            .collect()
    }

    #[test]
    fn equal_replies_to_one_peer_share_a_send() {
        let items = [(48, route(1, 1)); 5];
        assert_eq!(plan::<32>(&items, true), [(vec![0, 1, 2, 3, 4], Some(48))]);
    }

    #[test]
    fn without_kernel_support_nothing_groups() {
        let items = [(48, route(1, 1)); 3];
        assert_eq!(
            plan::<32>(&items, false),
            [(vec![0], None), (vec![1], None), (vec![2], None)]
        );
    }

    #[test]
    fn different_peers_sources_or_interfaces_do_not_group() {
        let mut other_if = route(1, 1);
        other_if.ifindex = 7;
        let items = [
            (48, route(1, 1)),
            (48, route(2, 1)),
            (48, route(1, 2)),
            (48, other_if),
        ];
        let got = plan::<32>(&items, true);
        assert_eq!(got.len(), 4, "{got:?}");
        assert!(got.iter().all(|(_, seg)| seg.is_none()));
    }

    #[test]
    fn interleaved_peers_each_get_their_own_send() {
        let items = [
            (48, route(1, 1)),
            (60, route(2, 1)),
            (48, route(1, 1)),
            (60, route(2, 1)),
        ];
        assert_eq!(
            plan::<32>(&items, true),
            [(vec![0, 2], Some(48)), (vec![1, 3], Some(60))]
        );
    }

    #[test]
    fn shorter_reply_ends_a_send_and_longer_one_starts_a_new_one() {
        let items = [
            (48, route(1, 1)),
            (48, route(1, 1)),
            (20, route(1, 1)), // the last, shorter segment
            (48, route(1, 1)), // after a shorter one: a new send
            (100, route(1, 1)),
            (48, route(1, 1)), // after a longer one: not back into the first send
        ];
        assert_eq!(
            plan::<32>(&items, true),
            [
                (vec![0, 1, 2], Some(48)),
                (vec![3], None),
                (vec![4, 5], Some(100)),
            ]
        );
    }

    #[test]
    fn a_longer_reply_breaks_a_send() {
        let items = [(48, route(1, 1)), (100, route(1, 1)), (48, route(1, 1))];
        assert_eq!(
            plan::<32>(&items, true),
            [(vec![0], None), (vec![1, 2], Some(100))]
        );
    }

    #[test]
    fn at_most_max_segments_per_send() {
        let items = [(48, route(1, 1)); 2 * GSO_MAX_SEGMENTS + 1];
        let got = plan::<{ 2 * GSO_MAX_SEGMENTS + 1 }>(&items, true);
        let sizes: Vec<usize> = got.iter().map(|(i, _)| i.len()).collect();
        assert_eq!(sizes, [GSO_MAX_SEGMENTS, GSO_MAX_SEGMENTS, 1]);
    }

    #[test]
    fn at_most_one_datagram_of_bytes_per_send() {
        let items = [(GSO_MAX_SEGMENT, route(1, 1)); 60];
        let got = plan::<60>(&items, true);
        let per_send = GSO_MAX_BYTES / GSO_MAX_SEGMENT;
        assert_eq!(got[0].0.len(), per_send);
        assert_eq!(got[1].0.len(), 60 - per_send);
    }

    #[test]
    fn empty_and_oversize_replies_never_group() {
        let items = [
            (0, route(1, 1)),
            (0, route(1, 1)),
            (GSO_MAX_SEGMENT + 1, route(1, 1)),
            (GSO_MAX_SEGMENT + 1, route(1, 1)),
            (48, route(1, 1)),
            (0, route(1, 1)), // not even as a shorter last segment
            (GSO_MAX_SEGMENT, route(1, 1)),
            (GSO_MAX_SEGMENT, route(1, 1)),
        ];
        assert_eq!(
            plan::<32>(&items, true),
            [
                (vec![0], None),
                (vec![1], None),
                (vec![2], None),
                (vec![3], None),
                (vec![4], None),
                (vec![5], None),
                (vec![6, 7], Some(1232)),
            ]
        );
    }

    #[test]
    fn order_towards_each_peer_is_kept() {
        // Two peers, two sources towards peer 1, varying lengths.
        let items = [
            (48, route(1, 1)),
            (48, route(1, 2)),
            (48, route(1, 1)),
            (30, route(2, 1)),
            (48, route(1, 1)),
            (30, route(2, 1)),
            (10, route(2, 1)),
            (30, route(2, 1)),
        ];
        let got = plan::<32>(&items, true);
        // Every item exactly once.
        let mut all: Vec<usize> = got.iter().flat_map(|(i, _)| i.clone()).collect();
        let sent = all.clone();
        all.sort_unstable();
        assert_eq!(all, (0..items.len()).collect::<Vec<_>>());
        // Towards each peer, the datagrams leave in their original order.
        for port in [1, 2] {
            let towards: Vec<usize> = sent
                .iter()
                .copied()
                .filter(|&i| items[i].1.dst.port() == port)
                .collect();
            let mut sorted = towards.clone();
            sorted.sort_unstable();
            assert_eq!(towards, sorted, "peer {port}: {got:?}");
        }
        // And the sends themselves: a source change towards one peer ends a send.
        assert_eq!(
            got,
            [
                (vec![0], None),
                (vec![1], None),
                (vec![2, 4], Some(48)),
                (vec![3, 5, 6], Some(30)),
                (vec![7], None),
            ]
        );
    }
}
