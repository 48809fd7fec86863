// Streams a raw float32 signal through an exported mcrave .ts the way nn~ does: one call per
// buffer, encode then decode (OUT.f32) and `forward` (OUT.f32.forward: present channels through
// the spatial stage), caches inside the module. Built against libtorch 2.5.1 by
// bench/check_nn_compat.sh; its outputs are compared with mcrave's own StreamingEngine.
//
//   stream_ts MODEL.ts IN.f32 CHANNELS FRAMES BUFFER OUT.f32 [PRESENT_FLAG ...]
#include <torch/script.h>
#include <torch/version.h>

#include <fstream>
#include <iostream>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 7) {
    std::cerr << "usage: stream_ts MODEL.ts IN.f32 CHANNELS FRAMES BUFFER OUT.f32 [FLAGS...]\n";
    return 2;
  }
  const int64_t channels = std::stoll(argv[3]), frames = std::stoll(argv[4]), buffer = std::stoll(argv[5]);
  torch::jit::Module model = torch::jit::load(argv[1]);
  model.eval();
  if (argc > 7) {
    std::vector<c10::IValue> flags;
    for (int i = 7; i < argc; ++i) flags.emplace_back(static_cast<int64_t>(std::stoll(argv[i])));
    const int64_t rc = model.get_method("set_present")(flags).toInt();
    if (rc != 0) { std::cerr << "set_present refused the flags\n"; return 1; }
  }
  std::vector<float> input(channels * frames);
  std::ifstream in(argv[2], std::ios::binary);
  in.read(reinterpret_cast<char*>(input.data()), input.size() * sizeof(float));
  auto signal = torch::from_blob(input.data(), {1, channels, frames}, torch::kFloat32).clone();
  std::vector<torch::Tensor> outputs, forwarded;
  torch::NoGradGuard guard;
  for (int64_t start = 0; start + buffer <= frames; start += buffer) {
    auto chunk = signal.narrow(2, start, buffer).contiguous();
    auto z = model.get_method("encode")({chunk}).toTensor();
    outputs.push_back(model.get_method("decode")({z}).toTensor());
    forwarded.push_back(model.forward({chunk}).toTensor());
  }
  const std::string path = argv[6];
  for (auto [tensors, name] : {std::make_pair(&outputs, path), std::make_pair(&forwarded, path + ".forward")}) {
    auto out = torch::cat(*tensors, 2).contiguous();
    std::ofstream o(name, std::ios::binary);
    o.write(reinterpret_cast<const char*>(out.data_ptr<float>()), out.numel() * sizeof(float));
  }
  std::cout << "libtorch " << TORCH_VERSION << ": streamed " << outputs.size() << " buffers of " << buffer << "\n";
  return 0;
}
