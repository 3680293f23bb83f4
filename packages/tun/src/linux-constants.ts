/**
 * Linux ABI numbers for the TUN device, checked against <linux/if_tun.h>
 * and <linux/sockios.h> (x86-64); libc's own are @gatehouse/libc's. Debian 12's headers
 * predate Linux 6.2, which added the USO flags; those come from the 6.2 uapi
 * headers. The virtio-net header lives in packet/virtio-net-header.ts.
 */

// <linux/if_tun.h>: _IOW('T', nr, int) = 0x40000000 | 4 << 16 | 0x54 << 8 | nr
export const TUNSETIFF = 0x400454ca;
export const TUNSETOFFLOAD = 0x400454d0;
export const TUNSETVNETHDRSZ = 0x400454d8;

export const IFF_TUN = 0x0001;
export const IFF_MULTI_QUEUE = 0x0100;
export const IFF_NO_PI = 0x1000;
export const IFF_VNET_HDR = 0x4000;
export const IFF_TUN_EXCL = 0x8000;

export const TUN_F_CSUM = 0x01;
export const TUN_F_TSO4 = 0x02;
export const TUN_F_TSO6 = 0x04;
export const TUN_F_USO4 = 0x20;
export const TUN_F_USO6 = 0x40;

/** The kernel's MAX_TAP_QUEUES. */
export const TUN_MAX_QUEUES = 256;
export const TUN_DEVICE_PATH = '/dev/net/tun';
/** The misc character device 10:200. */
export const TUN_DEVICE_MAJOR = 10;
export const TUN_DEVICE_MINOR = 200;

// <linux/sockios.h>, <net/if.h>: struct ifreq is 40 bytes, name first.
export const SIOCSIFMTU = 0x8922;
export const SIOCSIFTXQLEN = 0x8943;
export const IFREQ_SIZE = 40;
export const IFNAMSIZ = 16;
export const IFREQ_UNION_OFFSET = 16;
