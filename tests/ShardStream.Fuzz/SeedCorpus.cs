using System.Buffers;
using ShardStream.Wire;

namespace ShardStream.Fuzz;

/// <summary>The hand-made seed corpus: one valid frame of every type (four for Hello: a join of version 3, of version 12 and of version 13 naming its stream, an attach; two for Goodbye: a plain one and a coordinator's refusal of another stream's joiner with its proof; two for Heartbeat: the bare one and a peer's with its coordinate and parent RTTs), and a stream of several frames back to back.</summary>
public static class SeedCorpus
{
    public static IEnumerable<(string Name, byte[] Bytes)> Frames()
    {
        var frames = new List<(string, byte[])>
        {
            ("hello-join", Encode(new Hello(3, 3, HelloRole.Join, 0, Hello.DefaultUpload, [], "127.0.0.1:1235", [.. Enumerable.Range(1, 16).Select(i => (byte)i)]).Write)),
            // A joiner of version 12 answering Landmarks: its coordinate and the RTTs it measured (the coordinator's and a landmark's).
            ("hello-join-v12", Encode(new Hello(12, 12, HelloRole.Join, 5, 150, [], "0.0.0.0:1235", [.. Enumerable.Range(1, 16).Select(i => (byte)i)], null,
                new WireCoordinate(30.5f, -12.25f, 4f, 0.4f), [new MeasuredRtt(0, 61_000), new MeasuredRtt(9, 23_500)]).Write)),
            // A joiner of version 13 that names the stream it asks for (its --stream).
            ("hello-join-v13", Encode(new Hello(9, 13, HelloRole.Join, 5, 150, [], "0.0.0.0:1235", [.. Enumerable.Range(1, 16).Select(i => (byte)i)], null,
                WireCoordinate.Unknown, [], [.. Enumerable.Range(1, Protocol.KeyLength).Select(i => (byte)(i * 7))]).Write)),
            ("hello-attach", Encode(new Hello(3, 3, HelloRole.Attach, 7, 125, [new ShardStart(0, 17), new ShardStart(3, 4)], "[::1]:7001", null, [1, 2, 3, 4]).Write)),
            ("welcome", Encode(new Welcome(3, 42, 2, 1000, 123_456, [
                new ShardAssignment(0, AssignmentKind.Served, 0, 1000, ""),
                new ShardAssignment(1, AssignmentKind.Redirect, 9, 1001, "10.0.0.9:7000", [9, 9, 9])], new byte[Welcome.ProofLength], [.. Enumerable.Range(1, Protocol.RunIdLength).Select(i => (byte)i)]).Write)),
            // A reachability probe of version 16 (its nonce) and the probed peer's answer: no token, the proof of it over the nonce.
            ("hello-probe-v16", Encode(new Hello(16, 16, HelloRole.Probe, 0, 0, [], "10.0.0.1:7000", [.. Enumerable.Range(1, 16).Select(i => (byte)(i * 3))], null, WireCoordinate.Unknown, []).Write)),
            ("welcome-probe-v16", Encode(new Welcome(16, 0, 2, 0, 0, [], null, null, [.. Enumerable.Range(1, Protocol.ProbeProofLength).Select(i => (byte)(i * 5))]).Write)),
            ("chunk", Encode(w => new ChunkHeader(1, 77, 5_000_000).Write(w, "a short payload of a chunk"u8))),
            ("end", Encode(new End(1, 1234, 9_876_543, new byte[Protocol.SignatureLength]).Write)),
            ("goodbye", Encode(new Goodbye(GoodbyeCode.TooSlow, "too slow: 70000000 bytes waiting").Write)),
            // The coordinator's answer to that joiner when it streams another key (version 13): its key and signature, its run id.
            ("goodbye-other-stream", Encode(new Goodbye(GoodbyeCode.OtherStream, "this coordinator streams 8566, not 9d61: not placed", new byte[Welcome.ProofLength],
                [.. Enumerable.Range(1, Protocol.RunIdLength).Select(i => (byte)i)]).Write)),
            ("heartbeat", Encode(new Heartbeat(3).Write)),
            // A peer's control-link heartbeat of version 11: the interval it keeps, its coordinate, the RTTs to two parents.
            ("heartbeat-parent-rtts", Encode(new Heartbeat(5000, new WireCoordinate(30.5f, -12.25f, 4f, 0.4f), [new ParentRtt(0, 61_500, 60_900, 14), new ParentRtt(9, 24_000, 23_400, 6)]).Write)),
            ("attached", Encode(new Attached(31).Write)),
            ("move", Encode(new Move([new ShardAssignment(1, AssignmentKind.Redirect, 5, 0, "host-5:9000")]).Write)),
            ("parent-lost", Encode(new ParentLost(5, [new ShardStart(1, 401)], "chunk 401 does not match the stream's signed hash").Write)),
            ("detach", Encode(new Detach([0, 2]).Write)),
            ("leave", Encode(new Leave(12).Write)),
            ("slow-child", Encode(new SlowChild(7, 2500).Write)),
            ("hashes", Encode(new HashList(1, 3, new byte[2 * Protocol.HashLength], new byte[Protocol.SignatureLength]).Write)),
            ("notice", Encode(new Notice(NoticeCode.Leaf, "the coordinator could not connect to 10.0.0.9:7000").Write)),
            ("drop-child", Encode(new DropChild(9).Write)),
            ("fill", Encode(new Fill([new ShardStart(3, 1203), new ShardStart(7, 1207)], 1600).Write)),
            // An FLV file header (9 bytes) and the first previous-tag-size, as a joiner at chunk 400 writes them.
            ("stream-header", Encode(new StreamHeader(1, 2, 400, [.. "FLV"u8, 1, 5, 0, 0, 0, 9, 0, 0, 0, 0], new byte[Protocol.SignatureLength]).Write)),
            ("ping", Encode(new Ping(7).Write)),
            ("pong", Encode(new Pong(7, 1000, new WireCoordinate(1, -2, 0.5f, 0.25f)).Write)),
            // The coordinator first, with an unknown coordinate, then a peer; version 10 adds the trailer.
            ("landmarks", Encode(new Landmarks([new Landmark(0, "", WireCoordinate.Unknown), new Landmark(9, "10.0.0.9:7000", new WireCoordinate(-12.5f, 40.25f, 3.5f, 0.25f))], Protocol.OneConnectionVersion).Write)),
        };
        foreach (var frame in frames) yield return frame;
        // A connection's first frames back to back: hello, welcome, a chunk, heartbeats, end, goodbye.
        yield return ("stream", frames.Where(f => f.Item1 is "hello-attach" or "welcome" or "chunk" or "heartbeat" or "end" or "goodbye").SelectMany(f => f.Item2).ToArray());
    }

    private static byte[] Encode(Action<IBufferWriter<byte>> write)
    {
        var buffer = new ArrayBufferWriter<byte>();
        write(buffer);
        return buffer.WrittenSpan.ToArray();
    }
}
