using ShardStream.Transport;

namespace ShardStream.Nodes;

/// <summary>
/// The connections that have not yet sent their hello, bounded in total and per remote address
/// group (<see cref="AddressShares.GroupOf(string)"/>: an IPv4 address, an IPv6 /64).
/// A connection over a bound does not wait: the oldest waiting connection (of that address, or of
/// all) is dropped to make room, as a SYN cache does, so that a flood of silent or trickling
/// connections cannot keep an honest joiner out (its hello follows its connect at once) and cannot
/// grow the node's memory past <see cref="MaxTotal"/> small read buffers. Thread-safe.
/// </summary>
internal sealed class HelloGate(int maxTotal, int maxPerAddress)
{
    private readonly object _lock = new();
    private readonly LinkedList<Waiter> _waiting = new();
    private readonly AddressShares _perAddress = new(maxPerAddress);

    public int MaxTotal { get; } = maxTotal;

    /// <summary>Connections waiting for their hello now.</summary>
    public int Count
    {
        get
        {
            lock (_lock) return _waiting.Count;
        }
    }

    /// <summary>
    /// Registers a connection from <paramref name="host"/> (its address group; null: held to the
    /// total alone) that is about to wait for its hello. Its
    /// <see cref="Waiter.Token"/> is cancelled when it is dropped to make room (see
    /// <see cref="Waiter.DroppedBecause"/>), and <paramref name="abort"/> is called then, at once:
    /// a dropped connection gives its file descriptor back before the next one is accepted, which a
    /// close left to the waiting task did not under a flood (the node ran out of descriptors).
    /// Dispose the waiter once the hello has arrived or the wait ended.
    /// </summary>
    public Waiter Enter(string? host, Action? abort = null)
    {
        var waiter = new Waiter(this, host, abort);
        var dropped = new List<Waiter>();
        lock (_lock)
        {
            if (_perAddress.IsFull(host))
            {
                for (var node = _waiting.First; node is not null; node = node.Next)
                    if (node.Value.Host == host)
                    {
                        dropped.Add(Remove(node.Value, $"more than {_perAddress.Max} connections from {host} are waiting for a hello"));
                        break;
                    }
            }
            if (_waiting.Count >= MaxTotal) dropped.Add(Remove(_waiting.First!.Value, $"more than {MaxTotal} connections are waiting for a hello"));
            waiter.Node = _waiting.AddLast(waiter);
            _perAddress.Take(host);
        }
        foreach (var d in dropped) d.Drop();
        return waiter;
    }

    private Waiter Remove(Waiter waiter, string? reason)
    {
        if (waiter.Node is null) return waiter;
        _waiting.Remove(waiter.Node);
        waiter.Node = null;
        waiter.DroppedBecause = reason;
        _perAddress.Release(waiter.Host);
        return waiter;
    }

    /// <summary>One connection waiting for its hello.</summary>
    internal sealed class Waiter(HelloGate gate, string? host, Action? abort) : IDisposable
    {
        private readonly CancellationTokenSource _drop = new();

        public string? Host { get; } = host;

        internal LinkedListNode<Waiter>? Node { get; set; }

        /// <summary>Cancelled when this connection is dropped to make room for newer ones.</summary>
        public CancellationToken Token => _drop.Token;

        /// <summary>Why it was dropped; null while it waits or once it left normally.</summary>
        public string? DroppedBecause { get; internal set; }

        /// <summary>It left the gate (its hello came, or its wait ended); under the gate's lock.</summary>
        private bool _left;

        /// <summary>
        /// Aborts the connection first (its goodbye goes out), then wakes its wait. The other order
        /// let the woken read's own reset close the connection before the Busy goodbye was sent: a
        /// joiner dropped from a full gate could still be reset (found by review of b2d634f).
        /// </summary>
        internal void Drop()
        {
            lock (gate._lock)
            {
                // It left meanwhile: nothing to drop.
                if (_left) return;
            }
            abort?.Invoke();
            try
            {
                _drop.Cancel();
            }
            catch (ObjectDisposedException)
            {
                // It left while the abort ran: its wait is over anyway.
            }
        }

        public void Dispose()
        {
            lock (gate._lock)
            {
                gate.Remove(this, DroppedBecause);
                _left = true;
            }
            _drop.Dispose();
        }
    }
}
