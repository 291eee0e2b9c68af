"""A live H.264 MPEG-TS feed on loopback, for the stream tests (run as a subprocess).

    python tests/stream_sender.py --port 0 --width 640 --height 360 --fps 30 [--frames N]

Listens on 127.0.0.1:PORT (0: a free port), prints ``listening PORT`` once the socket listens,
then streams the synthetic scene (cvexport.stream.synthetic) to the first client at ``--fps``,
paced by the wall clock as a camera would, until ``--frames`` are sent, the client leaves, or
the process is killed. It is ``tcp://127.0.0.1:PORT?listen=1`` done with a Python socket, so the
test knows when the port listens (and never races for a free port), and a process of its own:
a listening writer and its reader in one process deadlock.
"""

from __future__ import annotations

import argparse
import socket
import sys
import time


def main() -> int:
    import av

    from cvexport.stream.synthetic import Scene, new_encoder_stream

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--frames", type=int, default=None, help="frames to send (default: until killed)")
    parser.add_argument("--start", type=int, default=0, help="first scene frame (a restarted sender goes on)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restarted sender takes the port again
    server.bind(("127.0.0.1", args.port))
    server.listen(1)
    print(f"listening {server.getsockname()[1]}", flush=True)
    server.settimeout(60)  # never outlive a test that forgot us
    connection, _ = server.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    scene = Scene(args.width, args.height, seed=args.seed)
    sent = 0
    try:
        with connection.makefile("wb") as pipe, \
                av.open(pipe, "w", format="mpegts", container_options={"flush_packets": "1"}) as container:
            stream = new_encoder_stream(container, args.width, args.height, args.fps, gop=args.fps // 2)
            started = time.perf_counter()
            for offset, (image, _) in enumerate(scene.frames(args.frames, start=args.start)):
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = args.start + offset
                container.mux(stream.encode(frame))
                pipe.flush()
                sent += 1
                delay = started + (offset + 1) / args.fps - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            container.mux(stream.encode(None))
    except (BrokenPipeError, ConnectionResetError, OSError):
        pass  # the reader left: nothing more to send
    print(f"sent {sent}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
