export {
  bind,
  close,
  errno,
  eventfd,
  flock,
  getsockname,
  getsockopt,
  ioctlPointer,
  ioctlValue,
  mknod,
  open,
  poll,
  read,
  recvmmsg,
  sendmmsg,
  setsockopt,
  socket,
  SystemCallError,
  write,
} from './libc.ts';
export * from './constants.ts';
export { addressInView, addressOf, keepingReachable } from './native-address.ts';
