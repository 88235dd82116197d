-- Exact comparison of non-negative decimal integers given as digit strings.
-- Nanosecond epochs (~1.8e18) do not fit a Lua number (a double, exact to 2^53), so the
-- digits are compared by length and then in chunks of 15, each of which fits exactly.
-- Prepended to prices.lua and order.lua when they are loaded (tasks/scripts.py).
-- Held times are always read from fields of their own, never parsed out of event JSON: a
-- string inside an event could otherwise pose as its time.
local function compare_digits(a, b)
  if #a ~= #b then
    if #a < #b then return -1 end
    return 1
  end
  for i = 1, #a, 15 do
    local x = tonumber(string.sub(a, i, i + 14))
    local y = tonumber(string.sub(b, i, i + 14))
    if x ~= y then
      if x < y then return -1 end
      return 1
    end
  end
  return 0
end
