// Loss values and their gradients with respect to the model output (Keras' default "sum_over_batch_size").
#ifndef TINYPROP_LOSS_H_
#define TINYPROP_LOSS_H_

#include "tinyprop/status.h"

namespace tinyprop {

// Softmax cross-entropy from logits [batch, classes] with integer labels [batch] in [0, classes)
// (keras.losses.SparseCategoricalCrossentropy(from_logits=True)). *loss = mean_b (logsumexp(z_b) - z_b[label]);
// grad (optional, [batch, classes]) = (softmax(z_b) - onehot(label)) / batch. Non-finite logits propagate.
Status SoftmaxCrossEntropy(const float* logits, const int32_t* labels, int32_t batch, int32_t classes,
                           float* loss, float* grad);

// Same with target distributions [batch, classes] (one-hot or soft; CategoricalCrossentropy(from_logits=True)):
// *loss = mean_b sum_c -t[b,c] * log_softmax(z_b)[c]; grad = (softmax(z_b) * sum_c t[b,c] - t_b) / batch.
Status SoftmaxCrossEntropyDense(const float* logits, const float* targets, int32_t batch, int32_t classes,
                                float* loss, float* grad);

// Mean squared error over all elements of pred/target [batch, dim]: *loss = sum (p - t)^2 / (batch * dim);
// grad (optional) = 2 (p - t) / (batch * dim) (equal to Keras' mean over the last axis then over the batch).
Status MeanSquaredError(const float* pred, const float* target, int32_t batch, int32_t dim, float* loss,
                        float* grad);

}  // namespace tinyprop

#endif  // TINYPROP_LOSS_H_
