#include "broker/tasks/shared_name.hpp"

namespace kbfleet::broker {

const std::string& SharedName::empty_string() {
  static const std::string kEmpty;
  return kEmpty;
}

SharedName NameTable::get(std::string_view name) {
  if (name.empty()) return SharedName();
  auto it = entries_.find(name);
  if (it == entries_.end()) {
    auto entry = std::make_unique<SharedName::Entry>(SharedName::Entry{std::string(name), 0});
    std::string_view key = entry->text;
    it = entries_.emplace(key, std::move(entry)).first;
  }
  return SharedName(it->second.get());
}

void NameTable::sweep() {
  if (entries_.size() < 2 * size_after_sweep_ + 64) return;
  std::erase_if(entries_, [](const auto& kv) { return kv.second->refs == 0; });
  size_after_sweep_ = entries_.size();
}

}  // namespace kbfleet::broker
