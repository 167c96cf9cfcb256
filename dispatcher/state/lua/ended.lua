-- Shared by every transition: is `status` one of the comma-separated terminal ones?
local function ended(status, terminals)
  for terminal in string.gmatch(terminals, '[^,]+') do
    if status == terminal then return true end
  end
  return false
end
