using System.Reflection;
using System.Runtime.InteropServices;
using System.Security.Cryptography;

namespace ShardStream.Cli;

/// <summary>
/// Lets the native-AOT build be one file. NSec calls into libsodium, a native library that a
/// self-contained single-file build extracts by itself but a native-AOT build would ship next to
/// the binary. The AOT build embeds it as a resource (see the csproj); on the first call into it,
/// this resolver writes it once to a per-user cache directory, named by its SHA-256 so that two
/// versions never clash, and loads it from there. Builds without the resource (every other build)
/// fall back to the runtime's usual search.
/// </summary>
internal static class EmbeddedLibsodium
{
    private const string ResourceName = "libsodium.native";

    public static void Install()
    {
        var nsec = typeof(NSec.Cryptography.Key).Assembly;
        if (Assembly.GetExecutingAssembly().GetManifestResourceInfo(ResourceName) is null)
        {
            return;
        }
        NativeLibrary.SetDllImportResolver(nsec, (name, _, _) =>
            name.Contains("sodium", StringComparison.Ordinal) && TryLoad(out var handle) ? handle : IntPtr.Zero);
    }

    private static bool TryLoad(out IntPtr handle)
    {
        handle = IntPtr.Zero;
        using var resource = Assembly.GetExecutingAssembly().GetManifestResourceStream(ResourceName);
        if (resource is null)
        {
            return false;
        }
        var bytes = new byte[resource.Length];
        resource.ReadExactly(bytes);
        var hash = SHA256.HashData(bytes);
        var directory = Path.Combine(CacheRoot(), "shardstream");
        var path = Path.Combine(directory, $"libsodium-{Convert.ToHexStringLower(hash)[..16]}.so");
        // A file already there is loaded only when its bytes are ours: the cache may sit in a
        // directory others can write to (the temporary directory when there is no home).
        if (!File.Exists(path) || !SHA256.HashData(File.ReadAllBytes(path)).AsSpan().SequenceEqual(hash))
        {
            if (OperatingSystem.IsWindows())
            {
                Directory.CreateDirectory(directory);
            }
            else
            {
                Directory.CreateDirectory(directory, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
            }
            // Write under a unique name and rename, so that two processes starting at once never
            // load a half-written file.
            var temporary = $"{path}.{Environment.ProcessId}.tmp";
            File.WriteAllBytes(temporary, bytes);
            File.Move(temporary, path, overwrite: true);
        }
        return NativeLibrary.TryLoad(path, out handle);
    }

    private static string CacheRoot()
    {
        var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (!string.IsNullOrEmpty(xdg))
        {
            return xdg;
        }
        var home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        return string.IsNullOrEmpty(home) ? Path.GetTempPath() : Path.Combine(home, ".cache");
    }
}
