using System.CommandLine;
using System.CommandLine.Parsing;
using System.Globalization;

namespace ShardStream.Cli;

/// <summary>The one-line reasons the CLI gives for a command line it cannot use.</summary>
internal static class CliErrors
{
    /// <summary>
    /// Refuses a comma in every decimal option of <paramref name="command"/> and its subcommands.
    /// The parser reads numbers with the invariant culture, which takes ',' as a thousands
    /// separator: "--upload 1,5" (one and a half, as many locales write it) would be read as 15.
    /// </summary>
    public static void RefuseDecimalCommas(Command command)
    {
        foreach (var option in command.Options)
        {
            var type = Nullable.GetUnderlyingType(option.ValueType) ?? option.ValueType;
            if (type != typeof(double)) continue;
            option.Validators.Add(result =>
            {
                if (result.Tokens.Any(t => t.Value.Contains(',')))
                    result.AddError($"{option.Name}: '{result.Tokens[^1].Value}' is not a number");
            });
        }
        foreach (var sub in command.Subcommands) RefuseDecimalCommas(sub);
    }

    /// <summary>
    /// A parse error in our words where the parser's would name a .NET type (a value that is not a
    /// number: "--upload: 'abc' is not a number" instead of "... as expected type
    /// 'System.Nullable`1[System.Double]'"), else the parser's message on one line.
    /// </summary>
    public static string Describe(ParseError error)
    {
        var option = error.SymbolResult switch
        {
            OptionResult o => o,
            ArgumentResult { Parent: OptionResult o } => o,
            _ => null,
        };
        if (option is not null && option.Tokens.Count > 0)
        {
            var type = Nullable.GetUnderlyingType(option.Option.ValueType) ?? option.Option.ValueType;
            string value = option.Tokens[^1].Value;
            string? expected = type switch
            {
                _ when type == typeof(int) || type == typeof(long) => long.TryParse(value, NumberStyles.Integer, CultureInfo.InvariantCulture, out _) ? null : "a whole number",
                _ when type == typeof(double) => double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out _) ? null
                    : double.TryParse(value.Replace(',', '.'), NumberStyles.Float, CultureInfo.InvariantCulture, out var meant) ? $"a number (decimals take a dot: {meant.ToString(CultureInfo.InvariantCulture)})"
                    : "a number",
                _ when type == typeof(bool) => bool.TryParse(value, out _) ? null : "true or false",
                _ => null,
            };
            if (expected is not null) return $"{option.Option.Name}: '{value}' is not {expected}";
            // A value outside a fixed list (AcceptOnlyFromAmong): the parser's message names no flag.
            int among = error.Message.IndexOf("Must be one of:", StringComparison.Ordinal);
            if (among >= 0)
            {
                var allowed = error.Message[(among + "Must be one of:".Length)..].Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
                return $"{option.Option.Name}: '{value}' is not one of {string.Join(", ", allowed.Select(a => a.Trim('\'')))}";
            }
        }
        return string.Join(' ', error.Message.Split((char[])['\n', '\r', '\t'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries));
    }
}
