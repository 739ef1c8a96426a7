using System.Buffers;
using ShardStream.Streaming;
using ShardStream.Transport;
using ShardStream.Wire;

namespace ShardStream.Tests.Transport;

/// <summary>
/// The relay's copy-free path on real loopback TCP: chunk frames sent as gathered writes (frame
/// prefix plus the payload where it is held), read by the connecting side into receive slabs, and
/// kept there as chunks.
/// </summary>
[Collection(ReceiveSlabCollection.Name)]
public class ZeroCopyTests
{
    private static readonly TcpTransport Tcp = TcpTransport.Instance;

    [Fact]
    public async Task Chunks_kept_from_receive_slabs_hold_the_bytes_that_were_sent()
    {
        await using var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        await using var receiver = await Tcp.ConnectAsync(listener.LocalAddress, default);
        await using var sender = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(sender);

        // Sizes from 1 byte to the largest chunk, in batches of up to 32 frames, with a control
        // frame now and then between them, as a link's writer sends them.
        const int count = 3000;
        var sizes = SizesFor(count, seed: 5);
        var sending = Task.Run(async () =>
        {
            var batch = new List<ArraySegment<byte>>();
            var random = new Random(6);
            for (int seq = 0; seq < count;)
            {
                int n = Math.Min(count - seq, random.Next(1, 33));
                for (int i = 0; i < n; i++, seq++)
                {
                    var prefix = new byte[ChunkHeader.FramePrefixLength];
                    new ChunkHeader(0, (ulong)seq, 0).WritePrefix(prefix, sizes[seq]);
                    batch.Add(prefix);
                    batch.Add(Payload(seq, sizes[seq]));
                    if (random.Next(10) == 0) batch.Add(FrameWriting.ToArray(static w => new Heartbeat(0).Write(w)));
                }
                await sender.SendAsync(batch, default).AsTask().WaitAsync(PipeIo.Deadline);
                batch.Clear();
            }
            await sender.CloseOutputAsync();
        });

        // Every chunk is kept until the end, as a replay window would keep it: a slab range handed
        // out twice would show as overwritten payloads.
        var kept = new List<Chunk>();
        var input = receiver.Pipe.Input;
        // A guard against a hang, not a speed bound: ~120 MB through loopback TCP, each payload made
        // twice, took over 30 s in ci132 (load 20-60, a Debug build).
        using var cts = new CancellationTokenSource(PipeIo.Deadline * 12);
        while (true)
        {
            var result = await input.ReadAsync(cts.Token);
            var buffer = result.Buffer;
            while (FrameCodec.TryReadFrame(ref buffer, out var type, out var body))
            {
                if (type != FrameType.Chunk) continue;
                Assert.True(ChunkHeader.TryRead(body, out var header, out var payload));
                kept.Add(Chunk.FromReceived(header.Shard, (long)header.Seq, 0, payload));
            }
            input.AdvanceTo(buffer.Start, buffer.End);
            if (result.IsCompleted) break;
        }
        await sending;

        Assert.Equal(count, kept.Count);
        for (int seq = 0; seq < count; seq++)
        {
            Assert.Equal(seq, kept[seq].Seq);
            Assert.True(Payload(seq, sizes[seq]).AsSpan().SequenceEqual(kept[seq].Span), $"chunk {seq} ({sizes[seq]} bytes) differs from what was sent");
        }
        // Only a small chunk (see Chunk.MaxCopiedPayload) and a frame cut by the end of a slab are copied out of it.
        var large = kept.Where(c => c.Length > Chunk.MaxCopiedPayload).ToList();
        int inSlabs = large.Count(c => c.Slab is not null);
        Assert.True(inSlabs >= large.Count * 9 / 10, $"only {inSlabs} of {large.Count} chunks over {Chunk.MaxCopiedPayload} bytes stayed in their receive slab");
        Assert.All(kept.Where(c => c.Length <= Chunk.MaxCopiedPayload), c => Assert.Null(c.Slab));

        var slabs = kept.Select(c => c.Slab).OfType<ReceiveSlab>().Distinct().ToList();
        foreach (var chunk in kept) chunk.Release();
        await receiver.DisposeAsync();
        Assert.All(slabs, slab => Assert.Equal(0, slab.References));
    }

    [Fact]
    public async Task A_gathered_send_larger_than_the_socket_buffers_arrives_whole_and_in_order()
    {
        await using var listener = await Tcp.ListenAsync("127.0.0.1:0", default);
        await using var receiver = await Tcp.ConnectAsync(listener.LocalAddress, default);
        await using var sender = await listener.AcceptAsync(default).AsTask().WaitAsync(PipeIo.Deadline);
        Assert.NotNull(sender);
        var parts = Enumerable.Range(0, 5).Select(i => Payload(1000 + i, 3 * 1024 * 1024 + i)).ToArray();

        var reading = PipeIo.ReadToEndAsync(receiver.Pipe.Input);
        await sender.SendAsync(parts.Select(p => new ArraySegment<byte>(p)).ToList(), default).AsTask().WaitAsync(PipeIo.Deadline);
        await sender.CloseOutputAsync();

        Assert.Equal(parts.SelectMany(p => p).ToArray(), await reading);
    }

    [Fact]
    public void Idle_slabs_that_no_one_rents_for_a_whole_period_are_let_go()
    {
        var slabs = Enumerable.Range(0, 4).Select(_ => ReceiveSlab.Rent()).ToList();
        foreach (var slab in slabs) slab.Release();
        int idle = ReceiveSlab.IdleCount;
        Assert.True(idle >= 4, $"{idle} idle slabs after 4 were released");

        ReceiveSlab.Trim(); // starts a period
        ReceiveSlab.Rent().Release(); // one slab is reused during it
        ReceiveSlab.Trim(); // drops what stayed idle all along

        Assert.True(ReceiveSlab.IdleCount <= 1, $"{ReceiveSlab.IdleCount} slabs still idle; the one reused in the period may stay");
    }

    private static int[] SizesFor(int count, int seed)
    {
        var random = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => random.Next(4) switch
        {
            0 => random.Next(1, 2048),
            1 => random.Next(1, Protocol.MaxChunkLength + 1),
            _ => Protocol.MaxChunkLength,
        }).ToArray();
    }

    private static byte[] Payload(int seq, int size)
    {
        var bytes = new byte[size];
        new Random(seq).NextBytes(bytes);
        return bytes;
    }
}
