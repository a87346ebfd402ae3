// Experiment aid, not product code: an LD_PRELOAD shim that sets TCP_NODELAY on every socket the process
// accepts. `trestle` serves gRPC through `serve_with_incoming_shutdown(TcpListenerStream)` and REST through
// `axum::serve`, and neither sets TCP_NODELAY on accepted connections, so small writes on the server side
// of a connection wait for the peer's delayed ACK (~40 ms on Linux). Running `trestle dev` under this shim
// shows what setting the option in the server (storage-node/src/node.rs) is worth, without a code change:
//
//   gcc -O2 -shared -fPIC -o nodelay.so benches/tools/nodelay-preload.c -ldl
//   LD_PRELOAD=$PWD/nodelay.so trestle dev ...        (benches/compare.sh does this with NODELAY_SHIM=1)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static void nodelay(int fd) {
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
}

int accept(int s, struct sockaddr *a, socklen_t *l) {
    static int (*real)(int, struct sockaddr *, socklen_t *);
    if (!real) real = dlsym(RTLD_NEXT, "accept");
    int fd = real(s, a, l);
    nodelay(fd);
    return fd;
}

int accept4(int s, struct sockaddr *a, socklen_t *l, int flags) {
    static int (*real)(int, struct sockaddr *, socklen_t *, int);
    if (!real) real = dlsym(RTLD_NEXT, "accept4");
    int fd = real(s, a, l, flags);
    nodelay(fd);
    return fd;
}
